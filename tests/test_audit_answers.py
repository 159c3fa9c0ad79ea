"""The audit report answers the questions an auditor asks, for this registry, and reads without MLflow: each version's
lineage, integrity and adapter card (copied beside the report, its digest in it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tasks.governance.audit_answers import QUESTIONS
from tasks.governance.audit_report import verify_report
from tasks.governance.audit_run import run_audit
from tests.test_audit import MODEL, NOW, seeded  # noqa: F401 - the seeded registry fixture


def _answers(data) -> dict[str, dict]:
    return {a["question"]: a for a in data["answers"]}


def test_the_report_answers_each_standard_question_for_this_registry(seeded, tmp_path):  # noqa: F811
    data, paths, _ = run_audit(out_dir=tmp_path / "audit", now=NOW, log=False)
    got = _answers(data)
    assert list(got) == list(QUESTIONS)
    assert got["What exists?"]["answer"].startswith("5 versions of 2 models")
    prod = "\n".join(got["What is in production, per model?"]["details"])
    assert f"{MODEL}: v{seeded['v3']} (approved)" in prod and "legacy: v1 (approved)" in prod
    who = "\n".join(got["Who approved what, when and why?"]["details"])
    assert f"{MODEL} v{seeded['v2']}: rejected by bob" in who and "bias gap too large" in who
    assert f"{MODEL} v{seeded['v3']}: approved by alice and bob" in who
    overrides = got["Which overrides, and who confirmed them?"]
    assert overrides["answer"] == "1 confirmed overrides"
    assert "gates regression failed; overridden by alice at" in overrides["details"][0]
    assert "confirmed by bob at" in overrides["details"][0]
    due = got["Which reviews are overdue or due soon?"]
    assert f"{MODEL} v{seeded['v1']}: expired" in "\n".join(due["details"]) and "1 due soon" in due["answer"]
    data_base = "\n".join(got["From which data and base?"]["details"])
    assert "base tiny @ local" in data_base and "code abc123" in data_base
    evidence = "\n".join(got["On what evidence?"]["details"])
    assert f"{MODEL} v{seeded['v3']}: gates validation passed, bias passed, regression failed" in evidence
    # the answers are part of the digested report, and in the HTML
    assert verify_report(paths["json"])
    page = paths["html"].read_text()
    assert "What an auditor asks" in page and all(q.replace("?", "") in page for q in QUESTIONS)


def test_a_flipped_adapter_byte_makes_the_byte_identity_answer_no(seeded, home, tmp_path):  # noqa: F811
    data, _, _ = run_audit(out_dir=tmp_path / "before", now=NOW, log=False)
    q = "Is what runs byte-identical to what was approved?"
    before = _answers(data)[q]
    assert before["answer"] == "yes, for every champion", before
    assert "adapter re-hashed to the registered digest" in "\n".join(before["details"])
    weights = home / "adapters" / f"{MODEL}-{seeded['v3']}" / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[10] ^= 0x01
    weights.write_bytes(bytes(raw))
    after = _answers(run_audit(out_dir=tmp_path / "after", now=NOW, log=False)[0])[q]
    assert after["answer"].startswith("NO for") and f"{MODEL} v{seeded['v3']}" in after["answer"]
    assert any(line.startswith(f"{MODEL} v{seeded['v3']}: adapter:") for line in after["details"])


def test_each_version_shows_lineage_integrity_and_a_copy_of_its_card(seeded, tmp_path):  # noqa: F811
    data, paths, _ = run_audit(out_dir=tmp_path / "audit", now=NOW, log=False)
    v3 = next(v for v in data["versions"] if v["model"] == MODEL and v["version"] == seeded["v3"])
    # every decision refreshed the version's card; the audit copied it beside the report, with its digest
    card = v3["card"]
    copy = tmp_path / "audit" / card["file"]
    assert copy.is_file() and hashlib.sha256(copy.read_bytes()).hexdigest() == card["sha256"]
    assert f"Adapter card: {MODEL} v{seeded['v3']}" in copy.read_text()
    assert card["artifact"] == f"runs:/{v3['run_id']}/card/card.html"
    page = paths["html"].read_text()
    assert f'href="{card["file"]}"' in page
    assert "lineage: data <code>dddddddddddddddd</code>" in page and "integrity: adapter re-hashed: matches" in page
    row = json.loads(Path(paths["json"]).read_text())["versions"]
    assert all("group_metrics" in v for v in row)


def _version(n: str, status: str, champion: bool, decisions: list[dict], **kw) -> dict:
    return {"model": "m", "version": n, "status": status, "champion": champion, "decisions": decisions,
            "gates": {"validation": "passed", "bias": "passed", "regression": "failed"}, "metrics": {},
            "lineage": {}, "missing_lineage": [], "review_due": "", "integrity": [], "disagreements": [],
            "model_signing": {"ok": True, "detail": "verifies", "legacy": False}, **kw}


def _decision(seq: int, action: str, actor: str, **kw) -> dict:
    return {"seq": seq, "at": "2026-01-01T00:00:00Z", "action": action, "actor": actor, "reason": "r",
            "approvers": [actor], "failed_gates": ["regression"], "awaiting_second": action == "overridden",
            "confirms": None, **kw}


def test_an_unconfirmed_override_and_a_bad_signature_are_answered_plainly():
    from tasks.governance.audit_answers import answers

    pending = _version("1", "pending", False, [_decision(3, "overridden", "alice")])
    champ = _version("2", "approved", True, [_decision(5, "overridden", "alice"),
                                             _decision(6, "approved", "bob", approvers=["alice", "bob"], confirms=5)],
                     model_signing={"ok": False, "detail": "the bundle does not verify: file changed"})
    got = {a["question"]: a for a in answers({"versions": [pending, champ], "chain": {"ok": True}, "findings": []})}
    o = got["Which overrides, and who confirmed them?"]
    assert o["answer"] == "1 confirmed overrides; 1 awaiting a second approver"
    assert "m v1: override by alice at 2026-01-01T00:00:00 (seq 3) awaits a second approver" in o["details"]
    assert any("m v2: gates regression failed; overridden by alice" in x and "confirmed by bob" in x
               for x in o["details"])
    b = got["Is what runs byte-identical to what was approved?"]
    assert b["answer"] == "NO for m v2"
    assert b["details"] == ["m v2: signature: the bundle does not verify: file changed"]
    # a broken ledger chain is never answered "yes"
    champ["model_signing"] = {"ok": True, "legacy": False}
    got = {a["question"]: a for a in answers({"versions": [champ], "chain": {"ok": False}, "findings": []})}
    assert got["Is what runs byte-identical to what was approved?"]["answer"] == "NO for m v2"
