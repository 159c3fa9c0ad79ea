"""Monitoring an approved adapter, end to end with a real registry: a tiny random-init BERT is trained through the
train_adapter flow on example tickets, approved, and then judged on new batches built from the example data
generator — through the CLI (``adaptrail monitor``) and through the ``monitor_adapter`` Prefect flow."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import main
from tasks.core import state
from tasks.core.errors import EXIT_GATE_FAILED, EXIT_OK
from tasks.core.names import ALIAS_CHAMPION, MONITOR_EXPERIMENT, TAG_MONITOR_LAST, ApprovalStatus, Tag
from tasks.data.example import generate_support_tickets
from tasks.governance import approvals, audit, monitoring_record, trust
from tasks.governance.ledger import Ledger
from tests.builders import setup_people
from tests.test_flow import _tiny_config

pytestmark = pytest.mark.integration
MODEL = "support-ticket-router"


@pytest.fixture(scope="module")
def approved(prefect_harness, tmp_path_factory, mlflow_db, tickets_csv, tiny_bert):
    """v1 trained on 600 tickets (seed 11) through the flow, with a signed policy, and approved by reviewer (test
    accuracy about 0.8)."""
    home = tmp_path_factory.mktemp("monitoring") / "state"
    home.mkdir(parents=True)
    shutil.copy(mlflow_db, home / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTRAIL_HOME", str(home))
        for name in ("MLFLOW_TRACKING_URI", "ADAPTRAIL_ARTIFACT_ROOT", "ADAPTRAIL_LEDGER_URL"):
            mp.delenv(name, raising=False)
        people = setup_people(home)
        config = yaml.safe_load(_tiny_config().read_text(encoding="utf-8"))
        config["peft"] = {"method": "full"}  # a random-init encoder learns the tickets only when it is all trained
        path = tmp_path_factory.mktemp("config") / "monitored.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "training.epochs=6", "training.max_steps=5000",
                "training.learning_rate=0.003", "training.early_stopping_patience=6", "gates.bias.min_group_size=10",
                # the group check judged here is the accuracy gap (0.1); the per-class rates are too noisy on
                # 90 test rows in four regions to judge
                "gates.bias.min_disparate_impact_ratio=0", "gates.bias.max_equalized_odds_difference=1",
                "gates.regression.min_margin_over_baseline=-1.0", "gates.regression.max_overfit_gap=1.0"]
        assert main(["run", "--config", str(path), *[a for s in sets for a in ("--set", s)]]) == 0
        approvals.approve(MODEL, "1", people["reviewer"], "gates passed; in scope")
        yield {"home": home, "people": people}


def tickets(seed: int, n: int = 400) -> pd.DataFrame:
    """New tickets from the same generator the training data came from (another seed: new texts, same world)."""
    return generate_support_tickets(n_rows=n, seed=seed)


def write(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


def status() -> str:
    with Ledger() as led:
        return approvals.ledger_tags(trust.read(led).events(model=MODEL, version="1"))[Tag.APPROVAL_STATUS]


def client() -> MlflowClient:
    return MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())


def monitor(cli, capsys, data: str) -> tuple[int, dict]:
    code = cli(["monitor", f"{MODEL}@champion", "--data", data, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_held_out_batches_from_the_training_distribution_pass(approved, cli, capsys, tmp_path):
    for seed in (21, 22):
        df = tickets(seed)
        code, result = monitor(cli, capsys, write(df, tmp_path / f"batch-{seed}.csv"))
        assert code == EXIT_OK, [c for c in result["checks"] if not c["passed"]]
        assert result["outcome"] == "pass" and result["labelled"] and result["grouped"] and result["rows"] == 400
        names = {c["name"] for c in result["checks"]}
        assert {"drift: prediction", "drift: length", "drift: vocabulary", "drift: confidence", "drift: embeddings",
                "performance: accuracy", "performance: macro_f1"} <= names
        assert any(n.startswith("groups: ") for n in names)  # the bias gate's group checks, re-run on the batch
        assert status() == ApprovalStatus.APPROVED
        # an MLflow run linked to the version, with the report and Evidently's plots; no raw text in any of them
        run = client().get_run(result["run_id"])
        assert run.data.tags["adaptrail.monitor.version"] == "1" and run.data.metrics["batch_rows"] == 400
        folder = client().download_artifacts(result["run_id"], "monitoring", str(tmp_path / f"art-{seed}"))
        files = {p.split("/")[-1]: open(p, encoding="utf-8").read() for p in
                 (f"{folder}/report.json", f"{folder}/report.md", f"{folder}/drift.html")}
        assert "drift: embeddings" in files["report.md"] and len(files["drift.html"]) > 10_000
        for text in df["text"].head(50):
            assert all(text not in content for content in files.values())
    assert client().get_experiment_by_name(MONITOR_EXPERIMENT) is not None
    assert client().get_model_version(MODEL, "1").tags[TAG_MONITOR_LAST].startswith("pass at ")
    with Ledger() as led:
        own = trust.read(led).events(model=MODEL, version="1")
    assert [h["outcome"] for h in monitoring_record.history(own)] == ["pass", "pass"]


def test_too_few_rows_is_its_own_outcome(approved, cli, capsys, tmp_path):
    code, result = monitor(cli, capsys, write(tickets(23, n=40), tmp_path / "small.csv"))
    assert code == EXIT_OK and result["outcome"] == "insufficient_data" and "min_rows" in result["reason"]
    assert result["checks"] == [] and status() == ApprovalStatus.APPROVED


def other_language(text: str) -> str:
    """The same tickets in a 'language' the base never saw: every word spelled backwards."""
    return re.sub(r"[A-Za-z]+", lambda m: m.group()[::-1], text)


def test_a_batch_in_another_language_is_drift_that_sends_the_version_back_for_review(approved, cli, capsys,
                                                                                     tmp_path):
    df = tickets(24)
    df = df.assign(text=df["text"].map(other_language)).drop(columns=["team"])  # production texts: no labels
    code, result = monitor(cli, capsys, write(df, tmp_path / "shifted.csv"))
    assert code == EXIT_GATE_FAILED and result["outcome"] == "breach" and not result["labelled"]
    assert {"drift: vocabulary", "drift: embeddings"} <= set(result["breaches"])
    assert result["drift"]["embeddings"]["effect"] > 0.9 and result["drift"]["vocabulary"]["effect"] > 0.5
    assert status() == ApprovalStatus.REVIEW_REQUIRED
    assert str(client().get_model_version_by_alias(MODEL, ALIAS_CHAMPION).version) == "1"  # champion unchanged
    assert cli(["verify", f"{MODEL}@champion"]) == EXIT_OK  # the policy's default: warn
    assert "[WARN] approval: review required" in capsys.readouterr().out
    found = audit.collect(rehash=False)
    audit.assess(found)
    assert any(f.code == "monitoring-review-required" and f.version == "1" for f in found.findings)
    (record,) = [v for v in found.versions if v.version == "1"]
    assert [h["outcome"] for h in record.monitoring] == ["pass", "pass", "insufficient_data", "breach"]
    assert record.monitoring[-1]["open"]
    approvals.review(MODEL, "1", approved["people"]["alice"], "looked at the report: a test batch in no language")
    assert status() == ApprovalStatus.APPROVED


def test_corrupted_labels_for_one_group_fail_the_group_check_in_the_flow(approved, tmp_path):
    from flows.monitor_adapter import monitor_adapter

    df = tickets(25)
    teams = sorted(df["team"].unique())
    us = df["region"] == "en-US"
    df.loc[us, "team"] = df.loc[us, "team"].map(lambda t: teams[(teams.index(t) + 1) % len(teams)])
    summary = monitor_adapter(model=f"{MODEL}@champion", data=write(df, tmp_path / "corrupted.csv"))
    assert summary["outcome"] == "breach" and summary["status"] == ApprovalStatus.REVIEW_REQUIRED
    assert any(b.startswith("groups: ") for b in summary["breaches"]), summary["breaches"]
    assert status() == ApprovalStatus.REVIEW_REQUIRED
    approvals.review(MODEL, "1", approved["people"]["bob"], "labels of that batch were wrong, not the adapter")
    assert status() == ApprovalStatus.APPROVED

    state_ = monitor_adapter(model=f"{MODEL}@champion", data=write(tickets(26), tmp_path / "clean.csv"),
                             return_state=True)
    clean = state_.result()
    assert clean["outcome"] == "pass" and clean["status"] == ApprovalStatus.APPROVED
    assert {a.key: a.type for a in _artifacts(state_.state_details.flow_run_id)} == {
        "monitoring-report": "markdown", "monitoring-checks": "table"}


def _artifacts(flow_run_id):
    import asyncio

    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_artifacts()

    return [a for a in asyncio.run(read()) if a.flow_run_id == flow_run_id]
