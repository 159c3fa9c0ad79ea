"""Whole-flow integration: a real Prefect run and a real MLflow SQLite store in a temp dir, on a tiny model."""

from __future__ import annotations

import pytest

from tests.builders import people_now
from mlflow.tracking import MlflowClient

from flows.cli import main
from tasks.core import state
from tasks.core.names import ALL_TAGS, ALIAS_CANDIDATE, ApprovalStatus, Tag

pytestmark = pytest.mark.integration

FAST = ["training.epochs=2", "training.batch_size=16", "training.learning_rate=0.01", "peft.r=4",
        "gates.bias.bootstrap_samples=50", "gates.bias.min_group_size=10", "gates.regression.min_group_size=10"]


def _args(csv, base, *extra):
    sets = [f"data.path={csv}", f"model.base={base}", *FAST, *extra]
    return ["run", "--config", str(_tiny_config())] + [a for s in sets for a in ("--set", s)]


def _tiny_config():
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def _client() -> MlflowClient:
    return MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())


def _versions(name: str):
    """The model's versions; a model that was never registered has none (any other store error fails the test)."""
    return _client().search_model_versions(f"name='{name}'")


#: Thresholds no tiny random-init model can miss: the whole-flow test below checks registration, not model quality.
PASSABLE_GATES = ["gates.regression.min_margin_over_baseline=-1.0", "gates.regression.max_overfit_gap=1.0",
                  "gates.bias.min_disparate_impact_ratio=0", "gates.bias.max_equalized_odds_difference=1",
                  "gates.bias.max_accuracy_gap=1", "gates.bias.max_counterfactual_flip_rate=1",
                  "gates.bias.max_counterfactual_prob_change=1"]


def test_train_adapter_registers_a_pending_version_with_every_tag(prefect_harness, state_home, tickets_csv, tiny_bert,
                                                                   capsys):
    code = main(_args(tickets_csv, tiny_bert, *PASSABLE_GATES))
    out = capsys.readouterr().out
    assert code == 0, out
    versions = _versions("support-ticket-router")
    assert len(versions) == 1
    tags = versions[0].tags
    missing = [t for t in ALL_TAGS if not tags.get(t)]
    assert not missing, f"tags missing or empty: {missing}"
    assert tags[Tag.GATE_VALIDATION] == "passed"
    assert tags[Tag.PEFT_METHOD] == "lora" and 0 < float(tags[Tag.PEFT_TRAINABLE_FRACTION]) < 1
    assert tags[Tag.REQUESTED_BY] == "test-requester"
    assert len(tags[Tag.ADAPTER_DIGEST]) == 64 and len(tags[Tag.BASE_MODEL_DIGEST]) == 64
    assert tags[Tag.FLOW_RUN_ID] not in ("", "none")
    assert tags[Tag.GATE_BIAS] == "passed" and tags[Tag.GATE_REGRESSION] == "passed"
    assert tags[Tag.APPROVAL_STATUS] == ApprovalStatus.PENDING
    assert _client().get_model_version_by_alias("support-ticket-router", ALIAS_CANDIDATE).version == versions[0].version
    # the run holds the evidence a reviewer needs
    run = _client().get_run(versions[0].run_id)
    arts = {a.path for a in _client().list_artifacts(run.info.run_id)}
    assert {"config.yaml", "validation", "adapter", "reports"} <= arts
    reports = {a.path for a in _client().list_artifacts(run.info.run_id, "reports")}
    assert {"reports/evaluation.json", "reports/evaluation.md", "reports/bias.json", "reports/regression.json",
            "reports/mlbom.cdx.json"} <= reports
    # the ML-BOM states what the version's tags state, and validates against CycloneDX 1.6
    import json

    from tasks.governance import mlbom

    bom = json.loads(open(_client().download_artifacts(run.info.run_id, "reports/mlbom.cdx.json")).read())
    mlbom.validate(bom)
    hashes = {c["bom-ref"]: c["hashes"][0]["content"] for c in [bom["metadata"]["component"], *bom["components"]]
              if c.get("hashes")}
    assert hashes[f"adapter:{tags[Tag.ADAPTER_DIGEST]}"] == tags[Tag.ADAPTER_DIGEST]
    assert hashes[f"base:{tags[Tag.BASE_MODEL_DIGEST]}"] == tags[Tag.BASE_MODEL_DIGEST]
    assert hashes[f"dataset:{tags[Tag.DATASET_DIGEST]}"] == tags[Tag.DATASET_DIGEST]
    card = bom["metadata"]["component"]["modelCard"]
    assert {m["type"] for m in card["quantitativeAnalysis"]["performanceMetrics"]} == {"accuracy", "macro_f1"}
    assert any(c.get("purl", "").startswith("pkg:pypi/torch@") for c in bom["components"])
    assert {"test_macro_f1", "test_accuracy", "train_loss", "val_macro_f1"} <= set(run.data.metrics)
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} and len(run.inputs.dataset_inputs) == 3
    # how many texts evaluation and the bias gate scored, and in how long (the pipeline benchmark's throughput)
    rows = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): json.loads(i.dataset.profile)["num_rows"]
            for i in run.inputs.dataset_inputs}
    from tasks.gates.evaluation import TRAIN_EVAL_CAP

    scored = rows["test"] + rows["validation"] + min(rows["train"], TRAIN_EVAL_CAP)
    assert run.data.metrics["scoring.evaluate.texts"] == scored and run.data.metrics["scoring.evaluate.seconds"] > 0
    swaps = json.loads(open(_client().download_artifacts(run.info.run_id, "reports/bias.json")).read())
    assert run.data.metrics["scoring.bias_gate.texts"] == swaps["details"]["counterfactual"]["n_swaps"]
    assert f"version {versions[0].version}" in out
    # the adapter's OpenSSF model-signing bundle: logged beside adapter/, recorded by the ledger, and accepted by the
    # library's own verifier with the pipeline's (P-256) service key
    import hashlib
    from pathlib import Path

    from model_signing import verifying

    from tasks.governance import keys
    from tasks.governance.ledger import Ledger

    bundle = Path(_client().download_artifacts(run.info.run_id, "signature/adapter.sig"))
    with Ledger() as led:
        registered = next(e for e in led.events(model="support-ticket-router") if e.action == "registered")
    record = registered.extra["adapter_signature"]
    assert record["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    service = keys.service_signer(create=False)
    assert service.kind == keys.ECDSA_P256 and record["key_id"] == service.key_id
    pem = bundle.with_name("pipeline.pem")
    pem.write_text(keys.public_pem(service.public))
    adapter = Path(_client().download_artifacts(run.info.run_id, "adapter"))
    assert set(record["files"]) == {p.name for p in adapter.iterdir()}
    verifying.Config().use_elliptic_key_verifier(public_key=pem).verify(adapter, bundle)


def test_validation_failure_stops_before_training_and_registers_nothing(prefect_harness, state_home, tickets, tmp_path,
                                                                         tiny_bert, capsys):
    leaky = tickets.copy()
    leaky.loc[:40, "text"] = leaky.loc[0, "text"]  # 40 duplicates: duplicate share and leakage fail
    leaky.loc[50, "text"] = "Please call me back on 415-555-0134 about my order"
    csv = tmp_path / "leaky.csv"
    leaky.to_csv(csv, index=False)
    code = main(_args(csv, tiny_bert))
    err = capsys.readouterr().err
    assert code == 2
    assert "data validation failed" in err and "duplicate_share" in err and "pii_phone" in err
    assert "report:" in err
    assert _versions("support-ticket-router") == []
    runs = _client().search_runs([e.experiment_id for e in _client().search_experiments()])
    assert runs and all(r.info.status == "FAILED" for r in runs)
    assert all(r.data.tags.get(Tag.GATE_VALIDATION) == "failed" for r in runs)
    assert not any(a.path == "adapter" for r in runs for a in _client().list_artifacts(r.info.run_id))


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["data.path=/nonexistent/data.csv"], "data file not found"),
        (["data.text_column=body"], "column(s) ['body'] not in the data"),
        (["model.base=/nonexistent/model"], "base model not found"),
        (["peft.r=0"], "peft.r must be a positive integer"),
        (["data.labels=[billing, technical]"], "label_in_set"),
    ],
)
def test_bad_input_exits_2_with_one_clear_message_and_nothing_registered(prefect_harness, state_home, tickets_csv,
                                                                         tiny_bert, capsys, extra, fragment):
    code = main(_args(tickets_csv, tiny_bert, *extra))
    out = capsys.readouterr()
    err = out.err + out.out
    assert code == 2, err
    assert fragment in err
    assert err.count("adaptrail: error:") == 1 and err.count(fragment) == 1  # said once, at the end
    assert "Traceback" not in err  # an expected error is not a crash
    assert _versions("support-ticket-router") == []


def test_an_unexpected_error_still_shows_its_traceback(prefect_harness, state_home, tickets_csv, tiny_bert, capsys,
                                                        monkeypatch):
    from tasks.steps import common

    def broken(ctx):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(common.validate_data, "fn", broken)
    with pytest.raises(RuntimeError):
        main(_args(tickets_csv, tiny_bert))
    out = capsys.readouterr()
    assert "Traceback" in out.err + out.out and "a bug, not a user error" in out.err + out.out


def test_a_deliberately_biased_training_set_fails_the_bias_gate(prefect_harness, state_home, tickets, tmp_path,
                                                                 tiny_bert, capsys):
    from tests.builders import skew_group_labels

    biased = skew_group_labels(tickets, group="en-IN", to_label="billing", fraction=0.8, seed=1)
    csv = tmp_path / "biased.csv"
    biased.to_csv(csv, index=False)
    code = main(_args(csv, tiny_bert, "training.epochs=4", "gates.regression.min_margin_over_baseline=-1.0"))
    out = capsys.readouterr().out
    assert code == 3, out
    assert "bias gate failed" in out, out
    assert any(m in out for m in ("disparate_impact", "equalized_odds", "accuracy_gap")), out  # a group disparity
    version = _versions("support-ticket-router")[0]
    assert version.tags[Tag.GATE_BIAS] == "failed"
    assert version.tags[Tag.APPROVAL_STATUS] == ApprovalStatus.REJECTED
    assert "bias" in version.tags[Tag.APPROVAL_REASON]
    aliases = _client().get_registered_model("support-ticket-router").aliases
    assert ALIAS_CANDIDATE not in aliases  # a rejected version is never the candidate


def test_a_worse_second_run_fails_the_regression_gate_against_the_approved_champion(
        prefect_harness, state_home, tickets_csv, tiny_bert, capsys, monkeypatch):
    from tasks.governance import approvals
    from tasks.governance.ledger import Ledger

    lenient = ["gates.regression.min_margin_over_baseline=-1.0", "gates.bias.judge_on=point",
               "gates.bias.max_accuracy_gap=1.0", "gates.bias.max_equalized_odds_difference=1.0",
               "gates.bias.min_disparate_impact_ratio=0.0", "gates.bias.max_counterfactual_flip_rate=1.0",
               "gates.bias.max_counterfactual_prob_change=1.0"]
    assert main(_args(tickets_csv, tiny_bert, "training.epochs=4", *lenient)) == 0, capsys.readouterr().out
    approvals.approve("support-ticket-router", "1", people_now()["reviewer"], "first adapter, gates passed")
    assert str(_client().get_model_version_by_alias("support-ticket-router", "champion").version) == "1"

    code = main(_args(tickets_csv, tiny_bert, "training.max_steps=2", "training.learning_rate=0.0001", *lenient))
    out = capsys.readouterr().out
    assert code == 3, out
    assert "regression gate failed" in out and "champion" in out
    v2 = _client().get_model_version("support-ticket-router", "2")
    assert v2.tags[Tag.GATE_REGRESSION] == "failed" and v2.tags[Tag.APPROVAL_STATUS] == ApprovalStatus.REJECTED
    run = _client().get_run(v2.run_id)
    assert run.data.tags["adaptrail.compared_with_champion"] == "1"
    assert "champion_test_macro_f1" in run.data.metrics and run.data.metrics["scoring.champion.texts"] > 0
    # the ledger holds both registrations, the approval, and the failed gate
    events = Ledger().events(model="support-ticket-router")
    assert [(e.version, e.action) for e in events[:3]] == [("1", "registered"), ("1", "approved"), ("2", "registered")]
    failed = {e.extra["gate"] for e in events[3:] if e.action == "gate_failed"}
    assert "regression" in failed, out
    assert failed == {g for g in ("bias", "regression") if v2.tags[Tag.gate(g)] == "failed"}
    assert Ledger().verify().ok


def test_an_unloadable_champion_fails_the_comparison_instead_of_passing_it_silently(
        prefect_harness, state_home, tickets_csv, tiny_bert, capsys, monkeypatch):
    """An insider who corrupts the champion's stored adapter does not get the next candidate waved through: the
    bias and regression gates fail, naming the champion that could not be loaded."""
    from tasks.governance import approvals

    assert main(_args(tickets_csv, tiny_bert, *PASSABLE_GATES)) == 0, capsys.readouterr().out
    approvals.approve("support-ticket-router", "1", people_now()["reviewer"], "first adapter")
    stored = _client().get_model_version("support-ticket-router", "1").source.removeprefix("file://")
    weights = next(p for p in __import__("pathlib").Path(stored).rglob("adapter_model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")

    code = main(_args(tickets_csv, tiny_bert, *PASSABLE_GATES))
    out = capsys.readouterr().out
    assert code == 3, out
    v2 = _client().get_model_version("support-ticket-router", "2")
    assert v2.tags[Tag.GATE_REGRESSION] == "failed" and v2.tags[Tag.GATE_BIAS] == "failed"
    assert "champion v1 could not be loaded" in out and "adapter digest mismatch" in out

    # unless the signed policy says to skip it: then the comparison is skipped and the run says why
    from tasks.core.names import RUN_TAG_CHAMPION_SKIPPED
    from tasks.governance import policy_admin
    from tasks.governance.policy import Policy

    skip = Policy.parse(policy_admin.current().content | {"skip_unloadable_champion": True})
    policy_admin.apply(skip, people_now()["admin"], "skip the broken champion until it is repaired")
    assert main(_args(tickets_csv, tiny_bert, *PASSABLE_GATES)) == 0, capsys.readouterr().out
    v3 = _client().get_model_version("support-ticket-router", "3")
    assert "champion v1 could not be loaded" in _client().get_run(v3.run_id).data.tags[RUN_TAG_CHAMPION_SKIPPED]


def test_a_run_requested_with_a_key_names_its_signer_as_the_requester(prefect_harness, state_home, tickets_csv,
                                                                       tiny_bert, capsys):
    """`adaptrail run --key`: the registration carries the signed run request, the requester is the key's person
    (not ADAPTRAIL_USER), and that person's key cannot approve the run."""
    import json

    from tasks.governance import approvals
    from tasks.governance.approvals import DecisionRefused
    from tasks.governance.ledger import Ledger
    from tests.builders import setup_people

    state_home.mkdir(parents=True, exist_ok=True)
    people = setup_people(state_home)
    args = _args(tickets_csv, tiny_bert, *PASSABLE_GATES) + ["--key", people["carol"].source]
    assert main(args) == 0, capsys.readouterr().err
    with Ledger() as led:
        (registered,) = [e for e in led.events(model="support-ticket-router") if e.action == "registered"]
    assert json.loads(registered.extra["request"]["statement"])["requested_by"] == "carol"
    assert registered.extra["tags"][Tag.REQUESTED_BY] == "carol"  # not ADAPTRAIL_USER (test-requester)
    with pytest.raises(DecisionRefused, match="separation-of-duties"):
        approvals.approve("support-ticket-router", "1", people["carol"], "my own run")
    assert approvals.approve("support-ticket-router", "1", people["bob"], "reviewed").status == "approved"
    assert main(args[:-2] + ["--key", people["carol"].source, "--requested-by", "dave"]) == 2  # one or the other
