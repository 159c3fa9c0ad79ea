"""Approval decisions: allow-list, separation of duties, override, idempotency, champion, expiry, and the ledger
being the record that MLflow tags are repaired from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.builders import tamper_sqlite

from tasks.governance import approvals, keys
from tasks.governance import registry
from tasks.governance.approvals import DecisionRefused
from tasks.core.errors import EXIT_BAD_INPUT, EXIT_REFUSED
from tasks.governance.ledger import Ledger
from tasks.core.names import ALIAS_CANDIDATE, ALIAS_CHAMPION, GATES, Tag

MODEL = "router"
REQUESTER = "carol"
P: dict = {}  # name -> Signer, set per test by _policy
NOW = datetime(2026, 1, 10, 9, 30, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _policy(people):
    P.clear()
    P.update(people)


def seed(failed: tuple[str, ...] = (), requester: str = REQUESTER, ledger: bool = True, candidate: bool = True) -> str:
    """Register a version with the tags the flow's register step writes (and its ledger events)."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "seed", {})
    gates = {g: "failed" if g in failed else "passed" for g in GATES}
    status = "rejected" if failed else "pending"
    tags = {Tag.APPROVAL_STATUS: status, Tag.APPROVAL_BY: "adaptrail/gates",
            Tag.APPROVAL_AT: NOW.isoformat(timespec="seconds"), Tag.APPROVAL_REASON: "registered",
            Tag.REVIEW_DUE: "2026-07-11", Tag.REQUESTED_BY: requester, Tag.ADAPTER_DIGEST: "a" * 64,
            Tag.BASE_MODEL: "tiny", Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.BASE_MODEL_REVISION: "local",
            Tag.DATASET_DIGEST: "d" * 64} | {Tag.gate(g): o for g, o in gates.items()}
    mv = registry.register_version(c, MODEL, run_id, registry.artifact_uri(c, run_id, "adapter"), tags)
    if candidate and not failed:
        registry.set_alias(c, MODEL, ALIAS_CANDIDATE, mv.version)
    if ledger:
        approvals.record_registration(MODEL, mv.version, status, gates, {"gates": gates}, requester, now=NOW)
    return str(mv.version)


def tags(version: str) -> dict[str, str]:
    return registry.client().get_model_version(MODEL, version).tags


def champion() -> str | None:
    mv = registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION)
    return str(mv.version) if mv else None


def events(version: str | None = None):
    with Ledger() as led:
        return led.events(model=MODEL, version=version)


def refused(rule: str, fn, *args, **kwargs) -> DecisionRefused:
    with pytest.raises(DecisionRefused) as info:
        fn(*args, **kwargs)
    assert info.value.rule == rule, str(info.value)
    assert info.value.exit_code == EXIT_REFUSED
    return info.value


def test_approval_moves_champion_and_sets_tags(home):
    v1, v2 = seed(), seed()
    first = approvals.approve(MODEL, v1, P["alice"], "beats baseline", now=NOW)
    assert first.changed and first.status == "approved" and champion() == v1
    later = NOW + timedelta(days=3)
    second = approvals.approve(MODEL, v2, P["bob"], "better on every group", now=later)
    assert second.champion == v2 and champion() == v2 and "was v1" in second.message
    t = tags(v2)
    assert t[Tag.APPROVAL_STATUS] == "approved" and t[Tag.APPROVAL_BY] == "bob"
    assert t[Tag.APPROVAL_AT] == later.isoformat(timespec="seconds")
    assert t[Tag.APPROVAL_REASON] == "better on every group"
    assert t[Tag.REVIEW_DUE] == (later + timedelta(days=182)).date().isoformat()
    assert registry.version_by_alias(registry.client(), MODEL, ALIAS_CANDIDATE) is None  # no longer awaiting
    last = events(v2)[-1]
    assert (last.action, last.actor, last.seq) == ("approved", "bob", second.seq)
    assert last.extra["previous_champion"] == v1 and last.extra["subject"]["adapter_digest"] == "a" * 64
    assert approvals.tag_ledger_disagreements(MODEL, v1) == [] == approvals.tag_ledger_disagreements(MODEL, v2)


@pytest.mark.parametrize("requester", [REQUESTER, "Carol ", "CAROL"])
def test_self_approval_is_refused(home, requester):
    """The requester's own key cannot approve: the key names the person, compared case-insensitively."""
    v = seed(requester=requester)
    err = refused("separation-of-duties", approvals.approve, MODEL, v, P["carol"], "mine is great")
    assert "requested the training run" in str(err)
    assert [e.action for e in events(v)] == ["registered"] and tags(v)[Tag.APPROVAL_STATUS] == "pending"


def test_only_keys_of_the_policys_approvers_may_decide(home, monkeypatch, tmp_path):
    v = seed()
    err = refused("allow-list", approvals.approve, MODEL, v, P["erin"], "trust me")  # a key, but no role
    assert "'erin' is not an approver in the policy" in str(err)
    refused("allow-list", approvals.approve, MODEL, v, P["admin"], "I run the policy")  # admins do not decide
    refused("allow-list", approvals.approve, MODEL, v, P["pipeline"], "the service key")  # nor does the pipeline
    stranger = keys.keygen(tmp_path / "mallory", "mallory")
    with pytest.raises(approvals.InputError, match="is not in the policy"):
        approvals.approve(MODEL, v, stranger, "ok")
    monkeypatch.setenv("ADAPTRAIL_APPROVERS", "erin,mallory")  # the environment no longer names approvers
    refused("allow-list", approvals.approve, MODEL, v, P["erin"], "ok")
    assert [e.action for e in events(v)] == ["registered"]


def test_a_reason_is_required(home):
    v = seed()
    refused("reason", approvals.approve, MODEL, v, P["alice"], "  ")


def test_failed_gates_need_an_override_confirmed_by_a_second_approver(home):
    v = seed(failed=("bias",))
    refused("override", approvals.approve, MODEL, v, P["alice"], "business needs it")
    refused("separation-of-duties", approvals.approve, MODEL, v, P[REQUESTER], "mine", override=True)
    first = approvals.approve(MODEL, v, P["alice"], "business needs it", override=True, now=NOW)
    assert (first.action, first.status, champion()) == ("overridden", "rejected", None)  # not approved yet
    assert "a second approver confirms" in first.message
    refused("second-approver", approvals.approve, MODEL, v, P["alice"], "again", override=True, now=NOW)
    refused("separation-of-duties", approvals.approve, MODEL, v, P[REQUESTER], "ok", override=True, now=NOW)
    refused("allow-list", approvals.approve, MODEL, v, P["erin"], "ok", override=True, now=NOW)
    assert [e.action for e in events(v)] == ["registered", "gate_failed", "overridden"] and champion() is None


def test_override_records_both_approvers(home):
    v = seed(failed=("bias", "regression"))
    approvals.approve(MODEL, v, P["alice"], "accepted risk, see ticket 42", override=True, now=NOW)
    d = approvals.approve(MODEL, v, P["bob"], "confirmed, ticket 42", override=True, now=NOW)
    assert (d.action, d.status, champion()) == ("approved", "approved", v)
    first, last = events(v)[-2:]
    assert first.action == "overridden" and first.actor == "alice" and first.extra["awaiting_second"]
    assert last.extra["approvers"] == ["alice", "bob"] and last.extra["confirms"] == first.seq
    assert last.extra["failed_gates"] == ["bias", "regression"]
    assert tags(v)[Tag.APPROVAL_BY] == "alice, bob"


def test_a_gate_failure_hidden_by_editing_tags_still_needs_an_override(home):
    v = seed(failed=("bias",))
    c = registry.client()
    c.set_model_version_tag(MODEL, v, Tag.GATE_BIAS, "passed")
    c.set_model_version_tag(MODEL, v, Tag.APPROVAL_STATUS, "pending")
    refused("override", approvals.approve, MODEL, v, P["alice"], "looks fine")
    assert tags(v)[Tag.GATE_BIAS] == "failed"  # repaired from the ledger by the refused call's reconcile


def test_double_approval_is_idempotent(home):
    v = seed()
    first = approvals.approve(MODEL, v, P["alice"], "good", now=NOW)
    again = approvals.approve(MODEL, v, P["alice"], "good", now=NOW + timedelta(hours=1))
    assert first.changed and not again.changed and again.seq is None
    assert [e.action for e in events(v)] == ["registered", "approved"]
    assert tags(v)[Tag.APPROVAL_AT] == NOW.isoformat(timespec="seconds")


def test_hand_edited_tags_are_reported_and_repaired_by_the_next_decision(home):
    v1, v2 = seed(), seed()
    approvals.approve(MODEL, v1, P["alice"], "good", now=NOW)
    c = registry.client()
    c.set_model_version_tag(MODEL, v2, Tag.APPROVAL_STATUS, "approved")
    c.set_model_version_tag(MODEL, v2, Tag.ADAPTER_DIGEST, "f" * 64)
    registry.set_alias(c, MODEL, ALIAS_CHAMPION, v2)

    found = approvals.tag_ledger_disagreements(MODEL, v2)
    assert any(Tag.APPROVAL_STATUS in f and "'approved' in MLflow but 'pending' in the ledger" in f for f in found)
    assert any(Tag.ADAPTER_DIGEST in f for f in found)
    assert any(f"alias {ALIAS_CHAMPION} points to v{v2}" in f for f in found)
    assert any("but the ledger's last approval makes v1 champion" in f
               for f in approvals.tag_ledger_disagreements(MODEL, v1))

    d = approvals.reject(MODEL, v2, P["bob"], "not convinced", now=NOW)
    assert len(d.repaired) == 3 and d.status == "rejected"
    assert tags(v2)[Tag.ADAPTER_DIGEST] == "a" * 64 and champion() == v1
    assert approvals.tag_ledger_disagreements(MODEL, v2) == [] == approvals.tag_ledger_disagreements(MODEL, v1)


def test_an_interrupted_decision_is_repaired_by_the_next_call(home, monkeypatch):
    """A crash after the ledger append and before the tags: the next call finishes it."""
    v = seed()

    def crash(*args):
        raise RuntimeError("MLflow went away")

    with monkeypatch.context() as mp, pytest.raises(RuntimeError):
        mp.setattr(approvals, "mirror", crash)
        approvals.approve(MODEL, v, P["alice"], "good", now=NOW)
    assert events(v)[-1].action == "approved"  # the ledger was written first
    assert tags(v)[Tag.APPROVAL_STATUS] == "pending" and champion() is None
    assert approvals.tag_ledger_disagreements(MODEL, v)

    again = approvals.approve(MODEL, v, P["alice"], "good", now=NOW)
    assert not again.changed and again.repaired  # finished, not recorded twice
    assert tags(v)[Tag.APPROVAL_STATUS] == "approved" and champion() == v
    assert [e.action for e in events(v)] == ["registered", "approved"]
    assert approvals.tag_ledger_disagreements(MODEL, v) == []


def test_revoke_removes_champion_and_names_the_successor(home):
    v1, v2, v3 = seed(), seed(), seed()
    approvals.approve(MODEL, v1, P["alice"], "first", now=NOW)
    approvals.approve(MODEL, v2, P["alice"], "second", now=NOW + timedelta(days=1))
    d = approvals.revoke(MODEL, v2, P["bob"], "leaks PII", now=NOW + timedelta(days=2))
    assert d.status == "revoked" and champion() is None  # not silently moved
    assert d.successor == v1 and f"adaptrail approve {MODEL} {v1}" in d.message
    refused("not-approved", approvals.revoke, MODEL, v3, P["bob"], "x")
    refused("revoked", approvals.approve, MODEL, v2, P["alice"], "again")
    assert not approvals.revoke(MODEL, v2, P["bob"], "again").changed

    # The named successor becomes champion only when someone approves it.
    back = approvals.approve(MODEL, v1, P["alice"], "reinstate", now=NOW + timedelta(days=2))
    assert back.changed and champion() == v1
    last = approvals.revoke(MODEL, v1, P["bob"], "retire", now=NOW + timedelta(days=3))
    assert last.successor is None and "nothing is champion" in last.message


def test_reject_rules(home):
    v1, v2 = seed(), seed()
    approvals.approve(MODEL, v1, P["alice"], "good", now=NOW)
    refused("use-revoke", approvals.reject, MODEL, v1, P["bob"], "changed my mind")
    assert approvals.reject(MODEL, v2, P[REQUESTER], "withdrawn by its requester").changed
    assert not approvals.reject(MODEL, v2, P["bob"], "no").changed


def test_overdue_approvals_expire_and_a_review_renews_them(home):
    v = seed()
    approvals.approve(MODEL, v, P["alice"], "good", now=NOW)
    assert approvals.expire_overdue(MODEL, now=NOW + timedelta(days=182)) == []  # due day itself is still valid
    later = NOW + timedelta(days=183)
    (expired,) = approvals.expire_overdue(MODEL, now=later)
    assert (expired.version, expired.status, expired.actor) == (v, "expired", "pipeline")  # the service key
    assert tags(v)[Tag.APPROVAL_STATUS] == "expired" and champion() == v
    assert approvals.approved_versions(MODEL, now=later) == []

    refused("separation-of-duties", approvals.review, MODEL, v, P[REQUESTER], "still fine")
    renewed = approvals.review(MODEL, v, P["dave"], "re-checked on fresh data", now=later)
    assert renewed.action == "reviewed" and tags(v)[Tag.APPROVAL_STATUS] == "approved"
    assert tags(v)[Tag.REVIEW_DUE] == (later + timedelta(days=182)).date().isoformat()
    assert approvals.expire_overdue(MODEL, now=later) == []
    assert [e.action for e in events(v)] == ["registered", "approved", "expired", "reviewed"]


def test_record_registration_is_idempotent_per_version(home):
    v = seed(failed=("bias",))
    gates = {"validation": "passed", "bias": "failed", "regression": "passed"}
    assert approvals.record_registration(MODEL, v, "rejected", gates, {"gates": gates}, REQUESTER) == []
    assert [e.action for e in events(v)] == ["registered", "gate_failed"]
    assert events(v)[1].extra["gate"] == "bias"
    with pytest.raises(approvals.InputError, match="pending or rejected"):
        approvals.record_registration(MODEL, v, "approved", gates, {}, REQUESTER)


def test_a_version_missing_from_the_ledger_is_never_backfilled_from_its_tags(home):
    """MLflow tags are claims, not records: a version the register step never recorded cannot be decided on."""
    v = seed(ledger=False)
    registry.client().set_model_version_tag(MODEL, v, Tag.APPROVAL_STATUS, "approved")  # claims, not a record
    assert approvals.tag_ledger_disagreements(MODEL, v) == [f"{MODEL} v{v} has no ledger events (registered "
                                                            "outside adaptrail, or another ledger)"]
    refused("not-registered", approvals.approve, MODEL, v, P["alice"], "first real approval", now=NOW)
    assert events(v) == [] and champion() is None


def test_unknown_version_is_bad_input(home):
    seed()
    with pytest.raises(approvals.InputError, match="not in the MLflow registry"):
        approvals.approve(MODEL, "99", P["alice"], "x")


def test_a_ledger_row_edited_in_the_database_is_named(home):
    v = seed()
    approvals.approve(MODEL, v, P["alice"], "good", now=NOW)
    tamper_sqlite(home / "ledger.db", "UPDATE approval_ledger SET actor = 'alice' WHERE seq = 1")
    with Ledger() as led:
        report = led.verify()
    assert report.first_broken_seq == 1 and "row seq=1" in report.problem


def test_cli_decisions_are_signed_with_the_deciders_key_and_exit_2_when_refused(home, monkeypatch, capsys, cli):
    v = seed()
    assert cli(["approve", MODEL, v, "--reason", "no key"]) == EXIT_BAD_INPUT
    assert "signed with your own key" in capsys.readouterr().err
    monkeypatch.setenv("ADAPTRAIL_SIGNING_KEY", P[REQUESTER].source)  # the requester's own key
    assert cli(["approve", MODEL, v, "--reason", "my own"]) == EXIT_REFUSED
    assert "refused (separation-of-duties)" in capsys.readouterr().err
    assert cli(["approve", f"{MODEL}/{v}", "--reason", "reviewed the reports", "--key", P["alice"].source]) == 0
    assert f"{MODEL} v{v}: approved; alias champion -> v{v}" in capsys.readouterr().out
    assert events(v)[-1].actor == "alice" and champion() == v
    assert cli(["revoke", MODEL, v, "--reason", "bad", "--key", P["erin"].source]) == EXIT_REFUSED  # the older form
    assert "not an approver in the policy" in capsys.readouterr().err
    assert cli(["revoke", MODEL, "--reason", "bad", "--key", P["bob"].source]) == EXIT_BAD_INPUT
    assert "name the version as MODEL/VERSION" in capsys.readouterr().err


def test_list_and_show_read_the_ledgers_view_and_refusals_exit_5(home, cli, capsys):
    v1, v2 = seed(), seed(failed=("bias",))
    approvals.approve(MODEL, v1, P["alice"], "good", now=NOW)
    registry.client().set_model_version_tag(MODEL, v2, Tag.APPROVAL_STATUS, "approved")  # a hand edit: not the record
    assert cli(["list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:4] == [MODEL, v1, "approved", "passed/passed/passed"] and rows[1].endswith("*")
    assert rows[2].split()[:4] == [MODEL, v2, "rejected", "passed/failed/passed"] and not rows[2].endswith("*")
    assert rows[3:] == ["(* champion)"]
    assert cli(["show", f"{MODEL}@champion", "-q"]) == 0  # options after the subcommand too
    assert f"## Review {MODEL} v{v1}" in capsys.readouterr().out
    assert cli(["verify", MODEL, v2]) == EXIT_REFUSED  # a refusal, not a typo (2)
    assert cli(["verify", MODEL, "@nosuchalias"]) == EXIT_BAD_INPUT
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        cli(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("adaptrail ")
