"""The compliance audit: a seeded registry + ledger (approved, rejected, overridden, expired, tampered versions)
gives exactly the expected findings and exit code; point-in-time answers; the reports exist and their digest
verifies."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.builders import setup_people, tamper_sqlite

from tasks.governance import approvals, attestation
from tasks.governance import audit
from tasks.governance import registry
from tasks.training.adapter_files import write_manifest
from tasks.governance.audit_report import verify_report
from tasks.governance.audit_run import run_audit
from tasks.core.errors import EXIT_AUDIT_FINDINGS, EXIT_BAD_INPUT, EXIT_OK, InputError
from tasks.governance.ledger import Ledger
from tasks.core.names import ALIAS_CHAMPION, GATES, Tag

MODEL, LEGACY = "router", "legacy"
P: dict = {}  # name -> Signer
T0 = datetime(2025, 10, 1, 9, 0, tzinfo=timezone.utc)  # registrations; an approval then is due 2026-04-01
NOW = datetime(2026, 6, 20, 12, 0, tzinfo=timezone.utc)  # the audit


def fake_adapter(folder: Path, seed: int) -> str:
    """A small adapter folder with a real manifest; returns its digest."""
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(bytes((seed + i) % 256 for i in range(256)))
    (folder / "adaptrail.json").write_text(json.dumps({"labels": ["a", "b"], "seed": seed}))
    return write_manifest(folder)


def seed(home: Path, model: str, n: int, f1: float, failed: tuple[str, ...] = (), lineage: bool = True,
         at: datetime = T0) -> str:
    """Register a version (run with metrics, stored adapter, every tag) and its ledger registration."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    registry.log_metrics(c, run_id, {"test_macro_f1": f1, "test_accuracy": round(f1 + 0.05, 4)})
    src = home / "adapters" / f"{model}-{n}"
    digest = fake_adapter(src, n)
    signature = attestation.sign_and_log(c, run_id, src, home / "work" / run_id)  # as the register step does
    gates = {g: "failed" if g in failed else "passed" for g in GATES}
    status = "rejected" if failed else "pending"
    tags = {Tag.APPROVAL_STATUS: status, Tag.APPROVAL_BY: "adaptrail/gates",
            Tag.APPROVAL_AT: T0.isoformat(timespec="seconds"), Tag.APPROVAL_REASON: "registered",
            Tag.REVIEW_DUE: "2026-07-06", Tag.REQUESTED_BY: "carol", Tag.ADAPTER_DIGEST: digest,
            Tag.BASE_MODEL: "tiny", Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.BASE_MODEL_REVISION: "local",
            Tag.DATASET_DIGEST: "d" * 64, Tag.CODE_VERSION: "abc123", Tag.FLOW_RUN_ID: f"flow-{n}"} | \
        {Tag.gate(g): o for g, o in gates.items()}
    if not lineage:
        del tags[Tag.CODE_VERSION], tags[Tag.FLOW_RUN_ID]
    mv = registry.register_version(c, model, run_id, src.as_uri(), tags)
    approvals.record_registration(model, mv.version, status, gates, {"gates": gates}, "carol", now=at,
                                  signature=signature)
    return str(mv.version)


@pytest.fixture
def seeded(home):
    """legacy v1 approved with a failed gate and no override, before signing began (an old ledger's unsigned
    events); then the policy; router v1 approved then expired (was champion, superseded), v2 rejected, v3 overridden
    by two approvers (champion, due soon), v4 pending with lineage gaps."""
    lv = seed(home, LEGACY, 1, 0.50, failed=("validation",), at=T0 - timedelta(days=2))
    state = {Tag.APPROVAL_STATUS: "approved", Tag.APPROVAL_BY: "mallory", Tag.APPROVAL_AT: "2026-01-06T00:00:00+00:00",
             Tag.APPROVAL_REASON: "ship it", Tag.REVIEW_DUE: "2026-12-31"}
    with Ledger() as led:
        led.append(LEGACY, lv, "approved", "mallory", "ship it", extra={"tags": state}, at=T0 - timedelta(days=1))
    c = registry.client()
    for k, val in state.items():
        c.set_model_version_tag(LEGACY, lv, k, val)
    registry.set_alias(c, LEGACY, ALIAS_CHAMPION, lv)
    P.update(setup_people(home, at=T0 - timedelta(hours=20)))
    v1 = seed(home, MODEL, 1, 0.70)
    v2 = seed(home, MODEL, 2, 0.60, failed=("bias",))
    v3 = seed(home, MODEL, 3, 0.80, failed=("regression",))
    v4 = seed(home, MODEL, 4, 0.75, lineage=False)
    approvals.approve(MODEL, v1, P["alice"], "beats baseline", now=T0)
    approvals.reject(MODEL, v2, P["bob"], "bias gap too large", now=T0 + timedelta(days=1))
    approvals.approve(MODEL, v3, P["alice"], "regression is noise", override=True, now=NOW - timedelta(days=160))
    approvals.approve(MODEL, v3, P["bob"], "regression is noise", override=True,
                      now=NOW - timedelta(days=160))  # review due in 22 days
    return {"v1": v1, "v2": v2, "v3": v3, "v4": v4, "legacy": lv}


def findings(a: audit.Audit) -> set[tuple[str, str, str, str]]:
    return {(f.severity, f.code, f.model, f.version) for f in a.findings}


def run(**kw) -> audit.Audit:
    a = audit.collect(now=NOW, **kw)
    audit.assess(a, NOW)
    return a


def test_seeded_registry_gives_exactly_the_expected_findings(seeded):
    a = run()
    assert findings(a) == {
        ("low", "expired", MODEL, "1"),  # v1's review.due passed; v3 replaced it as champion
        ("medium", "override", MODEL, "3"),
        ("low", "review-due-soon", MODEL, "3"),
        ("medium", "lineage-missing", MODEL, "4"),
        ("high", "failed-gate-approved", LEGACY, "1"),
        ("high", "review-period-too-long", LEGACY, "1"),  # hand-written: due 455 days after its approval
        ("high", "unsigned-approval", LEGACY, "1"),  # recorded before signing, not re-reviewed since
    }
    override = next(f for f in a.findings if f.code == "override")
    assert "alice and bob" in override.message and "regression is noise" in override.message
    assert audit.verdict(a.findings) == ("fail", EXIT_AUDIT_FINDINGS)
    assert audit.verdict(a.findings, "critical") == ("pass with findings", EXIT_OK)
    by = {(r.model, r.version): r for r in a.versions}
    assert by[(MODEL, "1")].expired_by_audit and by[(MODEL, "1")].status == "expired"
    assert by[(MODEL, "3")].champion and by[(MODEL, "3")].metrics == {"test_macro_f1": 0.80, "test_accuracy": 0.85}
    assert by[(MODEL, "4")].missing_lineage == ["lineage.code.version", "lineage.flow_run_id"]
    run()  # a second audit records no second expiry
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version="1")] == ["registered", "approved", "expired"]
    assert registry.client().get_model_version(MODEL, "1").tags[Tag.APPROVAL_STATUS] == "expired"


def test_an_expired_champion_is_high(home):
    P.update(setup_people(home))
    v = seed(home, MODEL, 1, 0.7, at=T0 - timedelta(days=401))
    approvals.approve(MODEL, v, P["alice"], "ok", now=T0 - timedelta(days=400))
    assert findings(run()) == {("high", "champion-expired", MODEL, v)}


def test_tampering_is_found(seeded, home):
    c = registry.client()
    src = registry.local_path_of(c.get_model_version(MODEL, seeded["v3"]).source) / "adapter_model.safetensors"
    data = bytearray(src.read_bytes())
    data[10] ^= 0x01
    src.write_bytes(bytes(data))
    c.set_model_version_tag(MODEL, seeded["v2"], Tag.APPROVAL_STATUS, "approved")
    c.delete_model_version(MODEL, seeded["v4"])
    a = run()
    tampered = {f for f in findings(a) if f[0] in ("critical", "high")}
    assert tampered == {("critical", "adapter-integrity", MODEL, "3"), ("critical", "adapter-signature", MODEL, "3"),
                        ("high", "tag-ledger", MODEL, "2"),
                        ("high", "unregistered", MODEL, "4"), ("high", "failed-gate-approved", LEGACY, "1"),
                        ("high", "review-period-too-long", LEGACY, "1"), ("high", "unsigned-approval", LEGACY, "1")}
    assert "adapter_model.safetensors changed" in next(f.message for f in a.findings if f.code == "adapter-integrity")
    assert "Hash mismatch for 'adapter_model.safetensors'" in next(  # the model-signing library's own verdict
        f.message for f in a.findings if f.code == "adapter-signature")

    tamper_sqlite(home / "ledger.db", "UPDATE approval_ledger SET reason = 'approved by the board' WHERE seq = 3")
    chain = [f for f in run().findings if f.code == "ledger-chain"]
    assert len(chain) == 1 and chain[0].severity == "critical" and "row seq=3" in chain[0].message


def test_point_in_time_champion(seeded):
    assert audit.champion_at(MODEL, audit.parse_when("2025-09-30", end_of_day=True))["champion"] is None
    jan = audit.champion_at(MODEL, audit.parse_when("2025-10-01", end_of_day=True))["champion"]
    assert (jan["version"], jan["action"], jan["approvers"], jan["reason"]) == ("1", "approved", ["alice"],
                                                                                 "beats baseline")
    feb = audit.champion_at(MODEL, audit.parse_when("2026-02-01", end_of_day=True))["champion"]
    assert (feb["version"], feb["action"], feb["approvers"]) == ("3", "approved", ["alice", "bob"])
    assert audit.champion_at(LEGACY, audit.parse_when("2026-03-01"))["champion"]["approvers"] == ["mallory"]


def test_scope_by_model_and_dates(seeded):
    assert {r.model for r in run(model=LEGACY).versions} == {LEGACY}
    # versions created or decided in the window: v3 (override 2026-01-11) and v1 (expired by this audit, at NOW)
    late = run(since=audit.parse_when("2026-01-10"), until=audit.parse_when("2026-06-30", end_of_day=True))
    assert {(r.model, r.version) for r in late.versions} == {(MODEL, "1"), (MODEL, "3")}
    with pytest.raises(InputError, match="no registered model"):
        audit.collect(model="nope", now=NOW)
    with pytest.raises(InputError, match="cannot read date"):
        audit.parse_when("last tuesday")


def test_reports_exist_and_their_digest_verifies(seeded, tmp_path):
    data, paths, run_id = run_audit(out_dir=tmp_path / "out", as_of="2026-02-01", champion_of=MODEL, now=NOW)
    assert data["summary"]["verdict"] == "fail" and data["summary"]["exit_code"] == EXIT_AUDIT_FINDINGS
    assert data["point_in_time"]["champion"]["version"] == "3"
    assert verify_report(paths["json"])
    assert paths["digest"].read_text().split()[0] == data["digest"]
    page = paths["html"].read_text()
    assert data["digest"] in page and data["summary"]["ledger_head_hash"] in page and "<svg" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no external assets
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 5 and {r["approved_by"] for r in rows if r["model"] == MODEL} >= {"alice, bob"}
    stored = json.loads(paths["json"].read_text())
    stored["findings"] = []
    paths["json"].write_text(json.dumps(stored))
    assert not verify_report(paths["json"])  # an edited report no longer matches its digest
    logged = registry.client().get_run(run_id)
    assert logged.data.tags["adaptrail.audit.digest"] == data["digest"]
    assert logged.data.metrics["findings.high"] == 3  # legacy v1: failed gate, review too late, unsigned approval


def test_cli_audit_exit_codes(seeded, tmp_path, capsys):
    from flows.cli import main

    assert main(["audit", "--out", str(tmp_path / "a"), "--json"]) == EXIT_AUDIT_FINDINGS
    out = json.loads(capsys.readouterr().out)  # the CLI audits at the real time: only time-proof facts here
    assert out["summary"]["counts"]["high"] >= 1 and out["summary"]["counts"]["critical"] == 0
    assert main(["audit", "--out", str(tmp_path / "b"), "--fail-on", "critical"]) == EXIT_OK
    assert main(["audit", "--as-of", "2026-02-01"]) == EXIT_BAD_INPUT
    assert main(["audit", "--out", str(tmp_path / "c"), "--as-of", "2026-02-01", "--champion-of", MODEL,
                 "--fail-on", "critical"]) == EXIT_OK
    assert "champion of router was v3" in capsys.readouterr().out


def test_flow_writes_reports_and_publishes_artifacts(prefect_harness, seeded, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.compliance_audit import compliance_audit

    state = compliance_audit(out_dir=str(tmp_path / "flow"), as_of="2026-02-01", champion_of=MODEL, now=NOW,
                             return_state=True)
    out = state.result()
    assert out["verdict"] == "fail" and out["exit_code"] == EXIT_AUDIT_FINDINGS and out["counts"]["high"] == 3
    assert verify_report(Path(out["report"]["json"]))
    run = registry.client().get_run(out["mlflow_run_id"])
    assert registry.client().get_experiment(run.info.experiment_id).name == "adaptrail-audits"

    import asyncio

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(artifacts()) if a.flow_run_id == state.state_details.flow_run_id}
    assert keys == {"compliance-audit-summary", "compliance-audit-versions"}
