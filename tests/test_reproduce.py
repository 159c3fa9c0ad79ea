"""``adaptrail reproduce MODEL/VERSION``: a version trained on the tiny config is re-trained from its recorded config,
data and base in a scratch state and comes out byte-identical on this machine (a new run with its own logs, the real
registry untouched); the result is a signed ``reproduced`` ledger event the audit shows, which sets no approval
state; a changed data file or base model is refused before anything is trained or recorded."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from tasks.core import state
from tasks.core.names import ApprovalStatus, Tag
from tasks.governance.ledger import LedgerEvent

integration = pytest.mark.integration  # the whole-flow tests; the rest are fast

MODEL, REF = "support-ticket-router", "support-ticket-router/1"
FAST = ["training.epochs=1", "training.max_steps=6", "training.batch_size=16", "peft.r=4",
        "gates.bias.bootstrap_samples=20", "gates.bias.min_group_size=10", "gates.regression.min_group_size=10",
        "gates.regression.min_margin_over_baseline=-1.0", "gates.regression.max_overfit_gap=1.0",
        "gates.bias.min_disparate_impact_ratio=0", "gates.bias.max_equalized_odds_difference=1",
        "gates.bias.max_accuracy_gap=1", "gates.bias.max_counterfactual_flip_rate=1",
        "gates.bias.max_counterfactual_prob_change=1"]


def _run_args(data: Path, base: Path) -> list[str]:
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    sets = [f"data.path={data}", f"model.base={base}", *FAST]
    return ["run", "--config", str(config)] + [a for s in sets for a in ("--set", s)]


def _client() -> MlflowClient:
    return MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())


def _events(action: str | None = None):
    from tasks.governance import trust
    from tasks.governance.ledger import Ledger

    with Ledger() as led:
        t = trust.read(led)
    return [e for e in t.events(model=MODEL, version="1") if action is None or e.action == action], t


@pytest.fixture
def registered(prefect_harness, home, people, tickets_csv, tiny_bert, tmp_path, capsys):
    """v1 trained on the tiny config from private copies of the data and the base (the tests change them)."""
    data, base = tmp_path / "data.csv", tmp_path / "base"
    shutil.copy(tickets_csv, data)
    shutil.copytree(tiny_bert, base)
    assert main(_run_args(data, base)) == 0, capsys.readouterr()
    capsys.readouterr()
    return {"data": data, "base": base, "people": people}


@integration
def test_reproduce_is_byte_identical_with_a_new_run_and_is_recorded_and_audited(registered, tmp_path, capsys,
                                                                                monkeypatch):
    from tasks.governance import approvals, events

    # the Prefect event about the reproduction, after its ledger event; none about the scratch registry's version
    announced, sent, notify = [], [], events.notify
    monkeypatch.setattr(events, "notify", lambda e, history=None: announced.append(e) or notify(e, history))
    monkeypatch.setattr(events, "send", lambda evs: sent.extend(evs) or True)
    from tasks.governance.audit import assess, collect
    from tasks.governance.audit_report import report_data, write_reports

    v1 = _client().get_model_version(MODEL, "1")
    env = json.loads(Path(_client().download_artifacts(v1.run_id, "reports/environment.json", str(tmp_path))
                          ).read_text())
    assert env["torch_threads"] >= 1 and env["packages"]["torch"] and env["seed"] == 13 and env["cpu"]

    out = tmp_path / "repro"
    code = main(["reproduce", REF, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"reproduced {MODEL} v1 -- byte-identical" in printed
    report = json.loads((out / "reproduction.json").read_text())
    assert report["identical"] is True
    assert [(e.action, e.seq) for e in announced if e.action == "reproduced"] == [("reproduced", report["ledger_seq"])]
    # the test harness's Prefect API gets the reproduction's event, never the scratch registration's
    assert [x.event for x in sent] == ["adaptrail.version.reproduced"]
    assert report["new"]["adapter_digest"] == v1.tags[Tag.ADAPTER_DIGEST]
    assert report["files"]["differ"] == [] and "adapter_model.safetensors" in report["files"]["identical"]
    assert report["metric_differences"] and all(d == 0 for d in report["metric_differences"].values())
    assert report["environment"]["differences"] == []

    # training really ran again: a new MLflow run (in the scratch store, with its own loss curve), a new Prefect
    # flow run, its own log, and a new adapter folder with the same bytes
    assert report["new"]["run_id"] != v1.run_id
    assert report["new"]["flow_run_id"] not in ("", "none", v1.tags[Tag.FLOW_RUN_ID])
    scratch = MlflowClient(report["new"]["tracking_uri"], registry_uri=report["new"]["tracking_uri"])
    new_run = scratch.get_run(report["new"]["run_id"])
    assert new_run.info.status == "FINISHED" and "train_loss" in new_run.data.metrics
    assert new_run.info.start_time > v1.creation_timestamp
    log = Path(report["new"]["log"]).read_text()
    assert "train-adapter" in log and "epoch 1/1 train_loss=" in log and report["new"]["flow_run_id"] in log
    new_weights = Path(report["new"]["adapter_dir"]) / "adapter_model.safetensors"
    assert new_weights.is_file() and str(out) in str(new_weights)

    # the real registry got no new version and no new run
    assert [str(m.version) for m in _client().search_model_versions(f"name='{MODEL}'")] == ["1"]
    runs = _client().search_runs([e.experiment_id for e in _client().search_experiments()])
    assert [r.info.run_id for r in runs] == [v1.run_id]

    # one signed `reproduced` event by the pipeline's key, naming who asked; the approval state is unchanged
    events, t = _events()
    repro = [e for e in events if e.action == "reproduced"]
    assert len(repro) == 1 and repro[0].seq == report["ledger_seq"] and not t.problems
    assert repro[0].actor == "pipeline" and repro[0].extra["requested_by"] == "test-requester"
    assert repro[0].extra["identical"] is True and repro[0].extra["signature"]
    assert approvals.ledger_tags(events)[Tag.APPROVAL_STATUS] == ApprovalStatus.PENDING
    assert approvals.tag_ledger_disagreements(MODEL, "1") == []

    # the audit shows it, per version, in JSON, CSV and HTML; an identical reproduction is no finding
    audit = collect()
    findings = assess(audit)
    assert audit.versions[0].reproduction["identical"] is True
    assert not [f for f in findings if f.code == "reproduction-differs"]
    paths = write_reports(report_data(audit), tmp_path / "audit")
    assert "reproduction" in paths["html"].read_text() and "byte-identical" in paths["html"].read_text()
    row = next(csv.DictReader(paths["csv"].open()))
    assert row["reproduced"].startswith("identical ")

    # a decision after the reproduction still goes through (the event is no state change, no stale CAS)
    assert approvals.approve(MODEL, "1", registered["people"]["bob"], "reviewed").status == "approved"


@integration
def test_reproduce_refuses_changed_data_or_base_and_records_nothing(registered, tmp_path, capsys):
    data, base = registered["data"], registered["base"]
    original = data.read_bytes()
    i = original.index(b"parcel") if b"parcel" in original else original.index(b"order")
    data.write_bytes(original[:i] + bytes([original[i] ^ 0x20]) + original[i + 1:])  # one byte: p -> P
    out = tmp_path / "repro"
    assert main(["reproduce", REF, "--out", str(out)]) == 5
    err = capsys.readouterr().err
    recorded = _client().get_model_version(MODEL, "1").tags[Tag.DATASET_DIGEST]
    assert str(data) in err and recorded in err and "dataset digest is now" in err
    assert not out.exists() and _events("reproduced")[0] == []

    data.write_bytes(original)
    (base / "config.json").write_text((base / "config.json").read_text() + "\n")  # a tampered base
    assert main(["reproduce", REF, "--out", str(out)]) == 5
    err = capsys.readouterr().err
    assert "base model" in err and _client().get_model_version(MODEL, "1").tags[Tag.BASE_MODEL_DIGEST] in err
    assert not out.exists() and _events("reproduced")[0] == []


@integration
def test_a_reproduced_event_cannot_be_forged_to_change_approval(registered):
    """An approver cannot sign a `reproduced` event (it is the pipeline's statement), and even the pipeline's key
    cannot make one set an approval status: such events are refused on write, or not counted when written around
    adaptrail."""
    from tasks.governance import trust
    from tasks.governance.ledger import Ledger, format_at

    people = registered["people"]
    _, t = _events()
    forged = {"identical": True, "tags": {Tag.APPROVAL_STATUS: ApprovalStatus.APPROVED}}
    for signer, actor in ((people["bob"], "bob"), (people["pipeline"], "pipeline")):
        d = trust.draft(t, MODEL, "1", "reproduced", actor, "forged", "", forged, format_at(None))
        with Ledger() as led:
            if actor == "bob":
                with pytest.raises(trust.SignatureRefused):
                    trust.commit(led, d, signer.sign(d.statement), t.policy)
            f = d.fields
            led.append(MODEL, "1", "reproduced", actor, "forged", "", {**f["extra"], "signature":
                       signer.sign(d.statement)}, f["at"])  # around adaptrail
    events, t = _events()
    assert [e for e in events if e.action == "reproduced"] == []
    assert {p.action for p in t.problems} == {"reproduced"} and len(t.problems) == 2
    from tasks.governance.ledger_view import ledger_tags

    assert ledger_tags(events)[Tag.APPROVAL_STATUS] == ApprovalStatus.PENDING


# --- fast: the comparison, the audit's finding and line, and the rules around a `reproduced` event ----------------


def test_environment_differences_name_what_changed():
    from tasks.training.environment import differences, training_environment

    now = training_environment(13)
    assert differences(now, now) == []
    was = json.loads(json.dumps(now)) | {"torch_threads": now["torch_threads"] + 3}
    was["packages"] = {**was["packages"], "torch": "2.0.0"}
    assert differences(was, now) == [f"packages.torch: 2.0.0 -> {now['packages']['torch']}",
                                     f"torch_threads: {now['torch_threads'] + 3} -> {now['torch_threads']}"]
    assert "not recorded at registration" in differences(None, now)[0]


def test_file_and_metric_comparison():
    from tasks.governance.reproduce import compare_files, metric_differences

    got = compare_files({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"})
    assert got == {"identical": ["a"], "differ": ["b"], "missing": ["c"], "added": ["d"]}
    assert metric_differences({"test_f1": 0.5, "test_acc": 0.7, "test_x": float("nan")},
                              {"test_f1": 0.25, "test_acc": 0.7, "test_x": 1.0}) == {"test_acc": 0.0, "test_f1": -0.25}


def _last(identical: bool, env: list[str]) -> dict:
    return {"seq": 7, "at": "2026-12-01T00:00:00.000000Z", "identical": identical, "by": "pipeline",
            "requested_by": "alice", "run_id": "r1", "files_differ": [] if identical else ["adapter_model.safetensors"],
            "metric_differences": {} if identical else {"test_macro_f1": -0.01}, "environment_differences": env,
            "out": "/tmp/x"}


def test_the_audit_reports_a_reproduction_that_was_not_identical():
    from tasks.governance.audit_report import _reproduction_line, reproduction_cell
    from tasks.governance.reproduce import reproduction_findings

    assert reproduction_findings("m", "1", None) == [] and reproduction_findings("m", "1", _last(True, [])) == []
    (explained,) = reproduction_findings("m", "1", _last(False, ["torch_threads: 1 -> 2"]))
    assert explained[:2] == ("low", "reproduction-differs") and "torch_threads: 1 -> 2" in explained[4]
    (unexplained,) = reproduction_findings("m", "1", _last(False, []))
    assert unexplained[0] == "medium" and "test_macro_f1 -0.0100" in unexplained[4]
    assert reproduction_cell(None) == "" and reproduction_cell(_last(False, [])).startswith("differs ")
    assert "not byte-identical" in _reproduction_line(_last(False, [])) and "never" in _reproduction_line(None)


def _event(seq: int, action: str, extra: dict) -> LedgerEvent:
    return LedgerEvent(seq, f"2026-12-01T00:00:0{seq}.000000Z", MODEL, "1", action, "x", "", "", f"p{seq}",
                       f"h{seq}", extra)


def test_a_reproduction_between_the_two_steps_of_an_override_does_not_break_it(tmp_path):
    """The second approver confirms the first override although a `reproduced` event came in between (it is no
    decision); and a `reproduced` event never sets an approval status."""
    from tasks.governance import keys
    from tasks.governance.event_rules import rule_problem
    from tasks.governance.policy import Policy

    line = keys.public_line(keys.keygen(tmp_path / "k", "k").public)
    policy = Policy.parse({"people": {"admin": {"roles": ["admin"], "keys": [line]}}}, "test")
    registered = _event(1, "registered", {"tags": {Tag.APPROVAL_STATUS: "rejected", Tag.REQUESTED_BY: "carol",
                                                   Tag.GATE_BIAS: "failed"}})
    first = _event(2, "overridden", {"awaiting_second": True, "approvers": ["x"]})
    first = first.__class__(**{**first.to_dict(), "actor": "alice"})
    repro = _event(3, "reproduced", {"identical": True})
    assert rule_problem([registered, first], repro, policy) == ""
    confirm = _event(4, "approved", {"confirms": 2, "approvers": ["alice", "bob"],
                                     "tags": {Tag.APPROVAL_STATUS: "approved", Tag.REVIEW_DUE: "2027-01-01"}})
    confirm = confirm.__class__(**{**confirm.to_dict(), "actor": "bob"})
    assert rule_problem([registered, first, repro], confirm, policy) == ""
    forged = _event(3, "reproduced", {"tags": {Tag.APPROVAL_STATUS: "approved"}})
    assert "may not set the status" in rule_problem([registered], forged, policy)


_SAVE = """
import sys
from pathlib import Path
from tasks.core.peft_config import PeftConfig
from tasks.training.adapter_files import save_adapter
from tasks.training.model import BaseModelRef, load_classifier, wrap_with_peft
from tasks.core.config import ModelConfig
from tasks.training.loop import seed_everything
seed_everything(0)  # the fresh head
ref = BaseModelRef(id="tiny", path=sys.argv[1], revision="local", digest="x")
model, fresh = load_classifier(ref, ModelConfig(base=sys.argv[1]), ["a", "b", "c"])
peft = PeftConfig(r=2, alpha=4)  # all-linear: peft keeps the resolved module names as a set
print(save_adapter(wrap_with_peft(model, peft, "sequence_classification", fresh), Path(sys.argv[2]), {}, peft))
"""


def test_the_adapter_bytes_do_not_depend_on_the_process_hash_seed(tiny_bert, tmp_path):
    """peft writes set-valued settings (the resolved target modules) in set order, which changes with each
    process's string-hash seed: two processes saving the same adapter must still write the same bytes."""
    import os
    import subprocess
    import sys

    digests = []
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", _SAVE, str(tiny_bert), str(tmp_path / seed)], text=True,
                             capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}, timeout=300,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(out.stdout.strip().splitlines()[-1])
    config = [(tmp_path / s / "adapter_config.json").read_bytes() for s in ("1", "2")]
    assert config[0] == config[1] and digests[0] == digests[1]
