"""Attacks on the audit trail, each run with the insider's own tools (raw SQL as the application's database role,
a plain MlflowClient, the environment, the CLI, the artifact store's files) against real stores. Every row states
what must happen: refused at the decision, refused by the database, or ``verify`` refuses and the audit reports a
finding of high severity or worse that names it.

Identities are keys: every test runs with a signed policy (``tests.builders.setup_people``) whose approvers are
alice, bob, carol, dave and reviewer; carol requests every run; erin holds a key with no role; mallory holds none.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tasks.core import state
from tasks.core.errors import EXIT_REFUSED
from tasks.core.config import ModelConfig
from tasks.core.names import ALIAS_CHAMPION, GATES, Tag
from tasks.core.peft_config import PeftConfig
from tasks.governance import approvals, audit, loader, registry
from tasks.governance import keys, policy_admin, run_requests, trust
from tasks.governance.evidence import evidence_markdown
from tasks.governance.ledger import Ledger
from tasks.training.adapter_files import save_adapter
from tasks.training.model import load_classifier, resolve_base_model, wrap_with_peft
from tasks.training.tiny_model import build_tiny_bert
from tests.builders import setup_people
from tests.pg import postgres  # noqa: F401  (the session fixture)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "router"
LABELS = ["billing", "tech"]
TEXTS = ["refund my invoice please", "the app crashes on start", "charged twice this month", "login page is broken"]
P: dict = {}  # name -> Signer of the test policy
APPEND_ONLY = "append-only"


# --- the honest set-up: a tiny adapter registered and approved as the pipeline does it -------------------------


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    base = resolve_base_model(ModelConfig(base=str(build_tiny_bert(tmp_path_factory.mktemp("base"), TEXTS))))
    torch.manual_seed(0)
    model, fresh = load_classifier(base, ModelConfig(base=base.path), LABELS)
    model = wrap_with_peft(model, PeftConfig(r=2), "sequence_classification", fresh)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    meta = {"task": "sequence_classification", "labels": LABELS, "max_length": 32, "base_model": base.to_dict(),
            "trust_remote_code": False}
    return {"base": base, "dir": folder, "digest": save_adapter(model, folder, meta)}


def fact_tags(adapter, base=None) -> dict[str, str]:
    base = base or adapter["base"]
    return {Tag.REQUESTED_BY: "carol", Tag.ADAPTER_DIGEST: adapter["digest"], Tag.BASE_MODEL: base.id,
            Tag.BASE_MODEL_REVISION: base.revision, Tag.BASE_MODEL_DIGEST: base.digest, Tag.DATASET_DIGEST: "d" * 64,
            Tag.CODE_VERSION: "abc123", Tag.FLOW_RUN_ID: "flow-1", Tag.PEFT_METHOD: "lora",
            Tag.PEFT_TRAINABLE_PARAMS: "100", Tag.PEFT_TRAINABLE_FRACTION: "0.010000"} | \
        {Tag.gate(g): "passed" for g in GATES}


def registered(adapter, approve: bool = True, base=None, requester: str = "carol", request: dict | None = None,
               failed: tuple[str, ...] = ()) -> str:
    """A version registered by the register step's path (facts, then the ledger) and approved by alice; ``base``:
    another base model reference to record (default: the one the adapter was trained on); ``request``: a signed
    run request."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    registry.log_path(c, run_id, adapter["dir"], "adapter")
    mv = registry.register_version(c, MODEL, run_id, registry.artifact_uri(c, run_id, "adapter"),
                                   fact_tags(adapter, base) | {Tag.REQUESTED_BY: requester})
    now = datetime.now(timezone.utc)
    initial = {Tag.APPROVAL_STATUS: "pending", Tag.APPROVAL_BY: "adaptrail/gates",
               Tag.APPROVAL_AT: now.isoformat(timespec="seconds"), Tag.APPROVAL_REASON: "registered",
               Tag.REVIEW_DUE: (now + timedelta(days=182)).date().isoformat()}
    status = "rejected" if failed else "pending"
    initial[Tag.APPROVAL_STATUS] = status
    approvals.record_registration(MODEL, mv.version, status, {g: "failed" if g in failed else "passed" for g in GATES},
                                  {}, requester, initial_state=initial, request=request)
    if approve:
        approvals.approve(MODEL, mv.version, P["alice"], "good")
    return str(mv.version)


def plain_client() -> MlflowClient:
    """The insider's MLflow client: no adaptrail code in between."""
    return MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())


def audit_findings() -> set[tuple[str, str, str]]:
    found = audit.collect(rehash=False)
    audit.assess(found)
    return {(f.severity, f.code, f.version) for f in found.findings}


def high_findings(version: str) -> list[str]:
    found = audit.collect(rehash=False)
    audit.assess(found)
    return [f.message for f in found.findings if f.version == version and f.severity in ("critical", "high")]


@pytest.fixture
def home(home):
    """The state directory with the signed test policy; everyone's keys in ``P``."""
    P.clear()
    P.update(setup_people(home))
    return home


def key(name: str) -> list[str]:
    """The CLI arguments that sign as ``name``."""
    return ["--key", P[name].source]


def insert_row(home: Path, version: str, action: str, actor: str, extra: dict, at: datetime | None = None) -> None:
    """Raw SQL as the application's role: a row with a valid hash (public arithmetic) after the current head."""
    with Ledger() as led:
        head = led.head()
    when = (at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    row = {"seq": head.seq + 1, "at": when, "model": MODEL, "version": version, "action": action, "actor": actor,
           "reason": "ok", "evidence_digest": "", "prev_hash": head.hash, "extra": extra}
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    row["hash"] = hashlib.sha256(canonical.encode()).hexdigest()
    con = sqlite3.connect(home / "ledger.db")
    with con:
        con.execute("INSERT INTO approval_ledger VALUES (:seq, :at, :model, :version, :action, :actor, :reason, "
                    ":evidence_digest, :prev_hash, :hash, :extra)",
                    {**row, "extra": json.dumps(row["extra"], sort_keys=True, separators=(",", ":"))})
    con.close()


def approved_tags(actor: str, days: int = 182) -> dict[str, str]:
    at = datetime.now(timezone.utc)
    return {Tag.APPROVAL_STATUS: "approved", Tag.APPROVAL_BY: actor, Tag.APPROVAL_AT: at.isoformat(),
            Tag.APPROVAL_REASON: "ok", Tag.REVIEW_DUE: (at + timedelta(days=days)).date().isoformat()}


# --- the ledger's rows: the database itself refuses to change them -------------------------------------------


@pytest.mark.parametrize("sql", ["UPDATE approval_ledger SET actor = 'mallory' WHERE seq = 1",
                                 "DELETE FROM approval_ledger WHERE seq = (SELECT max(seq) FROM approval_ledger)"])
def test_sqlite_refuses_editing_or_deleting_ledger_rows(home, sql):
    with Ledger() as led:
        led.append(MODEL, "1", "registered", "carol")
        led.append(MODEL, "1", "revoked", "bob", "leaked data")
    con = sqlite3.connect(home / "ledger.db")
    with pytest.raises(sqlite3.DatabaseError, match=APPEND_ONLY):
        with con:
            con.execute(sql)
    con.close()
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL)] == ["registered", "revoked"] and led.verify().ok


@pytest.fixture(scope="module")
def pg_ledger(postgres):  # noqa: F811
    """A ledger database set up by the shipped schema file, as the team deployment's init script does: the owner
    creates table and triggers; the application role may INSERT and SELECT only."""
    url = postgres.create_database("ledger_tamper")
    postgres.run("psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "adaptrail", "-d", "ledger_tamper",
                 "-v", "app_role=ledger_app", "-v", "app_password=app-secret",
                 "-f", str(ROOT / "infra" / "postgres-init" / "ledger-schema.psql"))
    app_url = f"postgresql+psycopg2://ledger_app@127.0.0.1:{postgres.port}/ledger_tamper"
    with Ledger(app_url) as led:
        led.append(MODEL, "1", "registered", "carol")
        led.append(MODEL, "1", "revoked", "bob", "leaked data")
    return {"owner": url, "app": app_url}


@pytest.mark.integration
@pytest.mark.parametrize("role", ["app", "owner"])
@pytest.mark.parametrize("sql", ["UPDATE approval_ledger SET actor = 'mallory' WHERE seq = 1",
                                 "DELETE FROM approval_ledger WHERE seq = 2", "TRUNCATE approval_ledger"])
def test_postgres_refuses_editing_deleting_or_truncating_ledger_rows(pg_ledger, role, sql):
    """The application role lacks the privilege; even the owner (or a role granted it) meets the triggers."""
    engine = create_engine(pg_ledger[role])
    with pytest.raises(DBAPIError, match=APPEND_ONLY if role == "owner" else "permission denied"):
        with engine.begin() as conn:
            conn.execute(text(sql))
    engine.dispose()
    with Ledger(pg_ledger["app"]) as led:
        assert [e.action for e in led.events()][:2] == ["registered", "revoked"] and led.verify().ok
        assert led.missing_guards() == []


@pytest.mark.integration
def test_a_postgres_ledger_without_its_triggers_is_a_high_finding(postgres):  # noqa: F811
    """The application role cannot create the triggers itself; the audit reports their absence."""
    owner = postgres.create_database("ledger_unguarded")
    with Ledger(owner) as led:
        led.append(MODEL, "1", "registered", "carol")
    engine = create_engine(owner)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER approval_ledger_no_change ON approval_ledger"))
        conn.execute(text("CREATE ROLE weak_app LOGIN"))
        conn.execute(text("GRANT SELECT, INSERT ON approval_ledger TO weak_app"))
    engine.dispose()
    with Ledger(f"postgresql+psycopg2://weak_app@127.0.0.1:{postgres.port}/ledger_unguarded") as led:
        assert led.missing_guards() == ["approval_ledger_no_change"]
    found = audit.Audit("now", None, None, None, {"ok": True}, ledger_guards_missing=["approval_ledger_no_change"])
    finding = audit.assess(found)[0]
    assert (finding.severity, finding.code) == ("high", "ledger-not-append-only")


# --- decisions: rules checked inside the write ---------------------------------------------------------------


def test_a_revoke_racing_a_review_wins_and_the_review_is_refused(home, adapter, cli, monkeypatch):
    """bob revokes (through the CLI) between alice's review being checked and being written: compare-and-swap
    on the version's last event refuses the review, and revoked stays final."""
    v = registered(adapter)
    checked = approvals.require_decider

    def revoke_in_between(*args, **kwargs):
        checked(*args, **kwargs)
        monkeypatch.setattr(approvals, "require_decider", checked)
        assert cli(["revoke", MODEL, v, "--reason", "leaked data", *key("bob")]) == 0

    monkeypatch.setattr(approvals, "require_decider", revoke_in_between)
    assert cli(["review", MODEL, v, "--reason", "still fine", *key("alice")]) == EXIT_REFUSED
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered", "approved", "revoked"]
    assert plain_client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "revoked"
    assert cli(["review", MODEL, v, "--reason", "again", *key("alice")]) == EXIT_REFUSED  # revoked is final
    assert registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION) is None


# --- MLflow tags are never facts ---------------------------------------------------------------------------


def test_a_version_made_in_mlflow_with_passing_gate_tags_cannot_be_approved(home, adapter, cli):
    c = plain_client()
    run = c.create_run(c.create_experiment("forged")).info.run_id
    c.create_registered_model(MODEL)
    mv = c.create_model_version(MODEL, source=f"runs:/{run}/adapter", run_id=run,
                                tags=fact_tags(adapter) | {Tag.APPROVAL_STATUS: "pending"})
    v = str(mv.version)
    assert cli(["approve", MODEL, v, "--reason", "gates passed", *key("alice")]) == EXIT_REFUSED
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert any("no ledger events" in m for m in high_findings(v))
    with Ledger() as led:
        assert led.events(model=MODEL) == []  # nothing back-filled from the tags


@pytest.mark.parametrize("tag", [Tag.CODE_VERSION, Tag.FLOW_RUN_ID, Tag.PEFT_METHOD, Tag.DATASET_DIGEST])
def test_an_edited_lineage_tag_is_refused_by_verify_and_named_by_the_audit(home, adapter, cli, tag):
    v = registered(adapter)
    plain_client().set_model_version_tag(MODEL, v, tag, "edited-by-mallory")
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert any(tag in m for m in high_findings(v))
    if tag in audit.LINEAGE_TAGS:  # the report reads lineage from the ledger, not from the edited tag
        record = next(r for r in audit.collect(rehash=False).versions if r.version == v)
        assert record.lineage[tag] == fact_tags(adapter)[tag]


def test_a_recreated_model_does_not_inherit_the_old_version_1s_approval(home, adapter, cli):
    v = registered(adapter)
    c = plain_client()
    old = c.get_model_version(MODEL, v)
    c.delete_registered_model(MODEL)
    c.create_registered_model(MODEL)
    run = c.create_run(c.get_experiment_by_name("tests").experiment_id).info.run_id
    new = c.create_model_version(MODEL, source=old.source, run_id=run, tags=dict(old.tags))
    assert str(new.version) == v
    c.set_registered_model_alias(MODEL, ALIAS_CHAMPION, v)
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert cli(["approve", MODEL, v, "--reason", "same as before", *key("alice")]) == EXIT_REFUSED
    assert any("not the version the ledger registered" in m for m in high_findings(v))


def test_a_base_model_tag_naming_a_module_never_imports_it(home, adapter, cli, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "mallory_payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    v = registered(adapter)
    plain_client().set_model_version_tag(MODEL, v, Tag.BASE_MODEL, "mallory_payload")
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert not marker.exists() and "mallory_payload" not in sys.modules


def test_an_edited_tokenizer_file_of_the_base_is_a_base_mismatch(home, adapter, cli, tmp_path):
    """The base digest covers every file of the base directory, not only the weights: an insider who edits the
    tokenizer the approved adapter runs on (weights untouched) is refused by verify."""
    import shutil

    copy = tmp_path / "base-copy"
    shutil.copytree(adapter["base"].path, copy)
    v = registered(adapter, base=resolve_base_model(ModelConfig(base=str(copy))))
    assert cli(["verify", MODEL, v]) == 0
    vocab = copy / "vocab.txt"
    vocab.write_text(vocab.read_text() + "mallory\n")
    report = loader.verify(f"{MODEL}/{v}")
    assert [c.name for c in report.failures] == ["base_model"], report.to_text()
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED


def test_a_refused_decision_does_not_move_the_champion_alias(home, adapter, cli):
    """An insider points alias champion at a pending version; a refused decision leaves it there (it does not
    "repair" anything), verify of the champion refuses it and the audit names the disagreement."""
    registered(adapter)
    pending = registered(adapter, approve=False)
    plain_client().set_registered_model_alias(MODEL, ALIAS_CHAMPION, pending)
    assert cli(["approve", MODEL, pending, "--reason", "mine", *key("carol")]) == EXIT_REFUSED  # carol: the requester
    assert str(registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION).version) == pending
    assert cli(["verify", f"{MODEL}@{ALIAS_CHAMPION}"]) == EXIT_REFUSED
    assert any("alias champion" in m for m in high_findings(pending))


# --- limits ------------------------------------------------------------------------------------------------


def test_the_review_period_is_the_signed_policys_never_the_environments(home, adapter, cli, monkeypatch):
    v = registered(adapter, approve=False)
    monkeypatch.setenv("ADAPTRAIL_REVIEW_PERIOD_DAYS", "36500")  # ignored: the period is the policy's
    assert cli(["approve", MODEL, v, "--reason", "good", *key("alice")]) == 0
    due = plain_client().get_model_version(MODEL, v).tags[Tag.REVIEW_DUE]
    assert due == (datetime.now(timezone.utc) + timedelta(days=182)).date().isoformat()
    with pytest.raises(approvals.InputError, match="review_period_days"):  # and the policy itself is capped
        policy_admin.apply(trust.Policy.parse({**policy_admin.current().content, "review_period_days": 36500}),
                           P["admin"], "a decade")


def test_a_forged_approval_row_with_a_valid_hash_does_not_count(home, adapter, cli):
    """Attack 2: an insider with INSERT rights appends an `approved` row with a valid hash (and a decade-long
    review): it carries no signature, so it does not count: the version stays pending, verify refuses, a later
    decision does not mirror it to MLflow, and the audit names it as critical."""
    v = registered(adapter, approve=False)
    insert_row(home, v, "approved", "alice", {"tags": approved_tags("alice", days=3650)})
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert ("critical", "unsigned-event", v) in audit_findings()
    assert any("is not signed" in m for m in high_findings(v))
    other = registered(adapter)  # an honest decision on another version reconciles: the forged row stays inert
    assert registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION).version == int(other)
    assert plain_client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "pending"


@pytest.mark.parametrize("how", ["outsider-key", "requester-own-key", "replayed", "backdated", "policy-by-approver"])
def test_signed_rows_written_around_the_decision_code_do_not_count(home, adapter, cli, tmp_path, how):
    """Attacks 1 and 2 with a key in hand: a row signed by a key outside the policy; by the requester's own approver
    key for their own run (separation of duties holds in the ledger, not only in the CLI); another version's valid
    signature copied onto this one; a validly signed row dated before the head; a policy change signed by an
    approver instead of an admin. None counts, verify refuses, the audit reports it as critical."""
    v = registered(adapter, approve=False)
    with Ledger() as led:
        t = trust.read(led)
    signer, actor, version, at = P["carol"], "carol", v, datetime.now(timezone.utc)
    if how == "outsider-key":
        signer, actor = keys.keygen(tmp_path / "mallory", "mallory"), "alice"
    elif how == "replayed":
        first = registered(adapter)  # alice's valid approval of another version
        with Ledger() as led:
            event = led.events(model=MODEL, version=first)[-1]
        insert_row(home, v, "approved", "alice", event.extra, at=datetime.fromisoformat(event.at[:-1] + "+00:00"))
    elif how == "backdated":
        signer, actor, at = P["alice"], "alice", datetime.now(timezone.utc) - timedelta(days=3)
    if how == "policy-by-approver":
        content = policy_admin.current().content
        mallory = keys.keygen(tmp_path / "mallory", "mallory")
        content["people"]["mallory"] = {"roles": ["approver"], "keys": [keys.public_line(mallory.public)]}
        d = trust.draft(t, "(policy)", "policy", "policy", "carol", "adding a friend", "",
                        {"policy": content, "policy_digest": trust.Policy.parse(content).digest}, at)
        insert_row(home, "policy", "policy", "carol", {**d.fields["extra"], "signature": P["carol"].sign(d.statement)})
        with Ledger() as led:
            assert "mallory" not in trust.read(led).policy.content["people"]  # the forged policy is inert
        assert ("critical", "unsigned-event", "policy") in audit_findings()
        return
    if how != "replayed":
        d = trust.draft(t, MODEL, version, "approved", actor, "ok", "", {"tags": approved_tags(actor)}, at)
        insert_row(home, version, "approved", actor, {**d.fields["extra"], "signature": signer.sign(d.statement)},
                   at=at)
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert ("critical", "unsigned-event", v) in audit_findings()
    assert plain_client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "pending"


def test_identity_claims_and_environment_allow_lists_decide_nothing(home, adapter, cli, monkeypatch, capsys):
    """Attack 1: carol (an approver, and the requester) claims to be alice and brings her own allow-list: the key
    names her, whatever the environment, a config or a flag says."""
    v = registered(adapter, approve=False)
    monkeypatch.setenv("ADAPTRAIL_USER", "alice")
    monkeypatch.setenv("ADAPTRAIL_APPROVERS", "carol,alice")
    with pytest.raises(SystemExit):
        cli(["approve", MODEL, v, "--reason", "mine", "--as", "alice", *key("carol")])  # no such flag any more
    assert cli(["approve", MODEL, v, "--reason", "mine", *key("carol")]) == EXIT_REFUSED
    assert "refused (separation-of-duties)" in capsys.readouterr().err
    assert cli(["approve", MODEL, v, "--reason", "mine", *key("erin")]) == EXIT_REFUSED  # a key without the approver role
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered"]


def test_keys_rotate_and_a_revoked_key_signs_nothing_new(home, adapter, cli, tmp_path):
    """alice's key is revoked (rotation): her earlier approval still verifies; a decision with the old key is
    refused; her new key works once the admin adds it."""
    v1 = registered(adapter)
    assert cli(["policy", "revoke-key", "alice", P["alice"].key_id, *key("admin")]) == 0
    assert cli(["verify", MODEL, v1]) == 0  # signed before the revocation: still counts
    v2 = registered(adapter, approve=False)
    assert cli(["approve", MODEL, v2, "--reason", "old key", *key("alice")]) == EXIT_REFUSED
    new = keys.keygen(tmp_path / "alice-2026", "alice")
    assert cli(["policy", "add", "alice", "--role", "approver", "--pubkey", f"{new.source}.pub", *key("admin")]) == 0
    assert cli(["approve", MODEL, v2, "--reason", "new key", "--key", new.source]) == 0
    assert cli(["verify", MODEL, v2]) == 0
    assert not [f for f in audit_findings() if f[0] in ("critical", "high")]


def test_an_audit_dated_in_the_future_is_refused(home, adapter):
    """The audit deployment's ``now`` parameter cannot write future-dated expiries."""
    from flows.compliance_audit import compliance_audit

    registered(adapter)
    with pytest.raises(Exception, match="is in the future"):
        compliance_audit.fn(now=datetime.now(timezone.utc) + timedelta(days=400))
    with Ledger() as led:
        assert [e.action for e in led.events()] == ["policy", "registered", "approved"]


def test_config_values_have_upper_bounds(cli, capsys):
    for key, value in [("training.epochs", 100000), ("peft.r", 100000), ("training.processes", 100000),
                       ("gates.bias.bootstrap_samples", 10**9), ("registry.review_period_days", 36500)]:
        assert cli(["run", "--config", "configs/tiny.yaml", "--set", f"{key}={value}"]) == 2
        assert key in capsys.readouterr().err


# --- what reports show ------------------------------------------------------------------------------------------


def test_spreadsheet_formulas_and_markdown_in_names_and_reasons_are_neutralised(home, adapter, cli, monkeypatch,
                                                                                tmp_path):
    formula = '=HYPERLINK("http://evil.example")'
    named = keys.keygen(tmp_path / "formula", "formula")
    policy_admin.add_person(formula, "approver", keys.public_line(named.public), P["admin"])  # a careless admin
    v = registered(adapter, approve=False)
    reason = "looks good [click](http://evil.example) <img src=x onerror=alert(1)> | injected"
    assert cli(["approve", MODEL, v, "--reason", reason, "--key", named.source]) == 0
    assert cli(["audit", "--out", str(tmp_path / "audit")]) == 0
    rows = list(csv.DictReader((tmp_path / "audit" / "audit.csv").open()))
    assert all(not str(cell).startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
    assert rows[0]["approved_by"] == "'" + formula
    page = evidence_markdown(MODEL, v)
    assert "\\[click\\](http" in page and "\\<img" in page  # shown literally, as text
    assert not re.search(r"(?<!\\)\[click|(?<!\\)<img", page)  # never as a link or an HTML tag


@pytest.mark.integration
def test_compare_and_swap_holds_on_postgres_too(pg_ledger):
    """The check inside the write lock: an append against a stale view of the version is refused."""
    from tasks.governance.ledger import LedgerConflict

    with Ledger(pg_ledger["app"]) as led:
        led.append(MODEL, "7", "registered", "carol", expect_last=None)
        seen = led.events(model=MODEL, version="7")[-1].seq
        led.append(MODEL, "7", "revoked", "bob", "leaked", expect_last=seen)  # the other decider, first
        with pytest.raises(LedgerConflict, match="changed while this decision was being made"):
            led.append(MODEL, "7", "reviewed", "alice", "fine", expect_last=seen)
        assert [e.action for e in led.events(model=MODEL, version="7")] == ["registered", "revoked"]


# --- checkpoints outside the database: truncation and rewrites show --------------------------------------------


def test_removing_the_last_ledger_rows_is_a_critical_finding(home, adapter, cli):
    """The owner of the SQLite file drops the triggers and deletes the revocation at the end of the chain: the chain
    still verifies, but the checkpoint written when the revocation was appended no longer matches."""
    from tests.builders import tamper_sqlite

    v = registered(adapter)
    assert cli(["revoke", MODEL, v, "--reason", "leaked data", *key("bob")]) == 0
    tamper_sqlite(home / "ledger.db", "DELETE FROM approval_ledger WHERE action = 'revoked'")
    with Ledger() as led:
        assert led.verify().ok  # a shorter chain is still a valid chain
    found = audit_findings()
    assert ("critical", "ledger-checkpoint", "") in found


def test_a_rewritten_chain_with_valid_hashes_is_a_critical_finding(home, adapter):
    """Rows rewritten from some seq on, every hash recomputed so the chain verifies: a checkpoint saw another row."""
    from tests.builders import tamper_sqlite

    v = registered(adapter)
    with Ledger() as led:
        last = led.events()[-1].to_dict()
    forged = {**last, "reason": "approved by the board"}
    forged.pop("hash")
    canonical = json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    tamper_sqlite(home / "ledger.db", "UPDATE approval_ledger SET reason = ?, hash = ? WHERE seq = ?",
                  "approved by the board", hashlib.sha256(canonical.encode()).hexdigest(), last["seq"])
    with Ledger() as led:
        assert led.verify().ok  # the last row's hash was recomputed: the chain alone cannot tell
    assert ("critical", "ledger-checkpoint", "") in audit_findings()
    assert v


@pytest.mark.parametrize("how", ["removed", "emptied", "replaced"])
def test_a_missing_emptied_or_replaced_checkpoint_store_is_a_high_finding(home, adapter, how):
    registered(adapter)
    store = home / "checkpoints.jsonl"
    if how == "removed":
        store.unlink()
    elif how == "emptied":
        store.write_text("")
    else:
        store.write_text('{"at": "x", "by": "append", "head_hash": "' + "0" * 64 + '", "ledger": "other", "seq": 1}\n')
    assert ("high", "ledger-checkpoint", "") in audit_findings()


def test_the_honest_path_leaves_no_checkpoint_finding(home, adapter, cli, tmp_path):
    v = registered(adapter)
    assert cli(["review", MODEL, v, "--reason", "semiannual", *key("bob")]) == 0
    assert not [f for f in audit_findings() if f[1] == "ledger-checkpoint"]
    assert cli(["audit", "--out", str(tmp_path / "a1")]) == 0
    assert cli(["audit", "--out", str(tmp_path / "a2")]) == 0  # the first audit's MLflow run is a checkpoint too


@pytest.mark.parametrize("forger", ["outsider", "approver"])
def test_checkpoints_are_signed_and_a_forged_line_is_reported_not_believed(home, adapter, tmp_path, forger):
    """Every checkpoint line carries the service key's signature; a line signed by a key outside the policy (an
    insider who can append to the store) is a high finding and is not compared (no false truncation alarm)."""
    from tasks.governance import checkpoints

    registered(adapter)
    store = home / "checkpoints.jsonl"
    lines = [json.loads(x) for x in store.read_text().splitlines()]
    assert lines and all(keys.signature_problem(P["pipeline"].public, checkpoints.Checkpoint(
        x["ledger"], x["seq"], x["head_hash"], x["at"], x["by"]).statement, x["signature"]) == "" for x in lines)
    signer = keys.keygen(tmp_path / "mallory", "mallory") if forger == "outsider" else P["alice"]  # not a service key
    fake = checkpoints.Checkpoint(lines[0]["ledger"], 99, "0" * 64, lines[-1]["at"], "append")
    with store.open("a") as f:
        f.write(json.dumps({**json.loads(fake.statement), "signature": signer.sign(fake.statement)}) + "\n")
    found = audit.collect(rehash=False)
    audit.assess(found)
    messages = [(f.severity, f.message) for f in found.findings if f.code == "ledger-checkpoint"]
    assert [s for s, _ in messages] == ["high"] and "not a service key of the policy" in messages[0][1]


def test_a_requester_who_trains_under_another_name_is_caught_by_signed_requests(home, adapter, cli, capsys):
    """Attack 1, the requester's side: carol trains claiming to be dave (ADAPTRAIL_USER) so that she can approve her
    own run. With `require_signed_requests` in the policy, an unsigned request is not approved by anyone; a signed
    one names its signer, so carol's key cannot approve it."""
    strict = trust.Policy.parse(policy_admin.current().content | {"require_signed_requests": True})
    policy_admin.apply(strict, P["admin"], "runs must be requested with a key")
    claimed = registered(adapter, approve=False, requester="dave")
    assert cli(["approve", MODEL, claimed, "--reason", "dave's run", *key("carol")]) == EXIT_REFUSED
    assert "refused (unsigned-request)" in capsys.readouterr().err
    signed = registered(adapter, approve=False, request=run_requests.sign_request(P["carol"], "c" * 64))
    assert cli(["approve", MODEL, signed, "--reason", "mine", *key("carol")]) == EXIT_REFUSED
    assert "refused (separation-of-duties)" in capsys.readouterr().err
    assert cli(["approve", MODEL, signed, "--reason", "reviewed", *key("alice")]) == 0
    with pytest.raises(approvals.InputError, match="signed for another config"):
        run_requests.check_request(run_requests.sign_request(P["carol"], "c" * 64), "d" * 64, "carol")


@pytest.mark.parametrize("how", ["names-someone-else", "replayed"])
def test_a_forged_or_replayed_run_request_does_not_count(home, adapter, cli, how):
    request = run_requests.sign_request(P["carol"], "c" * 64)
    if how == "replayed":
        registered(adapter, approve=False, request=request)
        v = registered(adapter, approve=False, request=request)
    else:  # carol's signed request on a registration that names dave as the requester
        v = registered(adapter, approve=False, requester="dave", request=request)
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert ("critical", "unsigned-event", v) in audit_findings()
    assert cli(["approve", MODEL, v, "--reason", "ok", *key("alice")]) == EXIT_REFUSED  # not registered, as the ledger counts


@pytest.mark.integration
def test_on_postgres_an_unsigned_row_inserted_by_the_app_role_does_not_count(postgres, home, monkeypatch):  # noqa: F811
    """The forged-row attack against the team deployment's ledger: the application role (INSERT and SELECT only)
    appends an `approved` row with a valid hash; under the signed policy it does not count and is named."""
    owner = postgres.create_database("ledger_signed")
    postgres.run("psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "adaptrail", "-d", "ledger_signed",
                 "-v", "app_role=signed_app", "-v", "app_password=app-secret",
                 "-f", str(ROOT / "infra" / "postgres-init" / "ledger-schema.psql"))
    app_url = f"postgresql+psycopg2://signed_app@127.0.0.1:{postgres.port}/ledger_signed"
    monkeypatch.setenv("ADAPTRAIL_LEDGER_URL", app_url)
    signers = setup_people(home / "pg")  # the policy, applied through the app role like every other append
    with Ledger() as led:
        head = led.head()
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    row = {"seq": head.seq + 1, "at": at, "model": MODEL, "version": "1", "action": "approved", "actor": "alice",
           "reason": "ok", "evidence_digest": "", "prev_hash": head.hash, "extra": {"tags": approved_tags("alice")}}
    row["hash"] = hashlib.sha256(json.dumps(row, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    engine = create_engine(app_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO approval_ledger VALUES (:seq, :at, :model, :version, :action, :actor, :reason,"
                          " :evidence_digest, :prev_hash, :hash, :extra)"),
                     {**row, "extra": json.dumps(row["extra"], sort_keys=True, separators=(",", ":"))})
    engine.dispose()
    with Ledger() as led:
        assert led.verify().ok  # a valid chain: the hash is public arithmetic
        t = trust.read(led)
    assert [(p.seq, p.action) for p in t.problems] == [(row["seq"], "approved")] and "not signed" in t.problems[0].text
    assert t.events(model=MODEL) == [] and t.policy is not None and "alice" in signers
    assert owner



# --- rows an insider signs with a key they hold, inserted around the decision code (found by an attacker review) ---


def signed_row(home: Path, version: str, action: str, signer, actor: str, extra: dict,
               at: datetime | None = None) -> None:
    """A statement drafted and signed exactly as adaptrail would, then INSERTed raw (skipping every rule check)."""
    with Ledger() as led:
        t = trust.read(led)
    d = trust.draft(t, MODEL if version != "policy" else "(policy)", version, action, actor, "ok", "", extra,
                    at or datetime.now(timezone.utc))
    insert_row(home, version, action, actor, {**d.fields["extra"], "signature": signer.sign(d.statement)},
               at=datetime.fromisoformat(d.fields["at"][:-1] + "+00:00"))


@pytest.mark.parametrize("how", ["reject-with-approved-tags", "revoked-made-approved", "service-key-expires-into-approved",
                                 "one-person-override", "review-due-beyond-policy", "decision-rewrites-a-fact"])
def test_a_validly_signed_row_that_breaks_a_rule_does_not_count(home, adapter, cli, how):
    """Whoever signs it, an event keeps the rules when the ledger is read: the status follows from the action,
    revoked is final, the service key never approves, an override takes two people in two events, the review date
    is within the policy's period, a decision never rewrites the registration's facts."""
    failed = ("bias",) if how == "one-person-override" else ()
    v = registered(adapter, approve=how == "revoked-made-approved", failed=failed)
    if how == "revoked-made-approved":
        assert cli(["revoke", MODEL, v, "--reason", "leaked data", *key("bob")]) == 0
    tags = approved_tags("alice")
    row = {"reject-with-approved-tags": ("rejected", "carol", {"tags": approved_tags("carol")}),
           "revoked-made-approved": ("rejected", "carol", {"tags": approved_tags("carol")}),
           "service-key-expires-into-approved": ("expired", "pipeline", {"tags": approved_tags("pipeline")}),
           "one-person-override": ("overridden", "alice", {"tags": tags, "approvers": ["alice", "bob"],
                                                           "failed_gates": ["bias"]}),
           "review-due-beyond-policy": ("approved", "alice", {"tags": approved_tags("alice", days=360)}),
           "decision-rewrites-a-fact": ("approved", "alice", {"tags": tags | {Tag.ADAPTER_DIGEST: "f" * 64}})}[how]
    action, actor, extra = row
    signed_row(home, v, action, P[actor], actor, extra)
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert ("critical", "unsigned-event", v) in audit_findings()


def test_a_forged_policy_row_revokes_no_key_and_a_future_dated_row_stops_no_write(home, adapter, cli):
    """No key needed for either: an unsigned policy row "revoking" alice's key from the year 2000, and a row dated
    9999. Neither counts; alice's approval still loads, and bob can still revoke it."""
    v = registered(adapter)
    content = policy_admin.current().content
    content["people"]["alice"]["keys"][0]["revoked_at"] = "2000-01-01T00:00:00.000000Z"
    insert_row(home, "policy", "policy", "admin", {"policy": content, "policy_digest": trust.json_sha256(content)})
    insert_row(home, "999", "rejected", "mallory", {}, at=datetime(9999, 12, 31, tzinfo=timezone.utc))
    assert cli(["verify", MODEL, v]) == 0
    assert cli(["revoke", MODEL, v, "--reason", "leaked data", *key("bob")]) == 0
    assert plain_client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "revoked"
    assert {("critical", "unsigned-event", "policy"), ("critical", "unsigned-event", "999")} <= audit_findings()


@pytest.mark.parametrize("extra", ["[1, 2]", "not json", "null", '{"tags": 5}', '{"approvers": 5}',
                                   '{"request": {}}'])
def test_a_malformed_raw_row_is_reported_and_crashes_nothing(home, adapter, cli, extra):
    v = registered(adapter)
    with Ledger() as led:
        head = led.head()
    at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    con = sqlite3.connect(home / "ledger.db")  # the row's hash need not even be valid: readers must not crash
    with con:
        con.execute("INSERT INTO approval_ledger VALUES (?, ?, ?, ?, 'registered', 'mallory', '', '', ?, ?, ?)",
                    (head.seq + 1, at, MODEL, v, head.hash, "f" * 64, extra))
    con.close()
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED  # the chain is broken and the row does not count, but nothing raises
    assert cli(["revoke", MODEL, v, "--reason", "leaked data", *key("bob")]) == 0
    assert ("critical", "ledger-chain", "") in audit_findings()



def test_a_run_whose_service_key_the_policy_does_not_name_is_refused_before_training(home, monkeypatch, tmp_path):
    """An insider points the pipeline at their own key: nothing trains, nothing is registered under it."""
    from tasks.steps.common import open_run

    rogue = keys.keygen(tmp_path / "rogue-service", "rogue")
    monkeypatch.setenv("ADAPTRAIL_SERVICE_KEY", rogue.source)
    with pytest.raises(approvals.InputError, match="could not sign this run's registration: key .* is not in the "
                                                   "policy"):
        trust.require_service_key()
    with pytest.raises(approvals.InputError, match="could not sign"):
        open_run.fn(None, None, None, "carol")  # refused first, before the config is even read
    monkeypatch.setenv("ADAPTRAIL_SERVICE_KEY", P["alice"].source)  # a key of the policy, but not a service key
    with pytest.raises(approvals.InputError, match="may not sign `registered`"):
        trust.require_service_key()


def test_a_decision_the_reader_would_not_count_is_never_signed(home, adapter, monkeypatch):
    """Defence in depth: were a rule of the decision code lost (here: separation of duties switched off), the
    statement is still checked against the reader's rules before it is signed, so nothing is written."""
    v = registered(adapter, approve=False)
    monkeypatch.setattr(approvals, "require_decider", lambda *a, **k: None)
    with pytest.raises(approvals.DecisionRefused, match=r"refused \(rule\): 'carol' approves their own run"):
        approvals.approve(MODEL, v, P["carol"], "mine")
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered"]
