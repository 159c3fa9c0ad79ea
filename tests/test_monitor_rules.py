"""Monitoring in the ledger, attacked like the rest of the trail (``tests/test_tamper.py``'s insider): a breach sets
``review_required`` only through the pipeline's service key, only an approver's review clears it, the policy decides
whether loading warns or refuses, and a training config cannot loosen the policy's thresholds. No model is scored
here (``tests/test_monitor.py`` runs whole monitoring runs); the adapter is test_tamper's tiny real one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tasks.core.errors import EXIT_OK, EXIT_REFUSED
from tasks.core.names import ALIAS_CHAMPION, ApprovalStatus, Tag
from tasks.governance import approvals, loader, monitoring_record, policy_admin, registry, trust
from tasks.governance.ledger import Ledger
from tasks.governance.policy import Policy
from tests.test_tamper import MODEL, P, adapter, audit_findings, home, insert_row, plain_client, registered  # noqa: F401

BREACH = {"outcome": "breach", "run_id": "run-1", "rows": 500, "labelled": False, "breaches": ["drift: embeddings"],
          "data": "landing/*.jsonl", "data_digest": "e" * 64, "on_review_required": "warn"}


def status(version: str) -> str:
    with Ledger() as led:
        return approvals.ledger_tags(trust.read(led).events(model=MODEL, version=version))[Tag.APPROVAL_STATUS]


def forge(home, version: str, action: str, signer_name: str, actor: str, tags: dict[str, str]) -> None:
    """A statement validly signed with a real key of the policy and INSERTed around adaptrail's code (so only the
    rule under test can refuse it)."""
    with Ledger() as led:
        t = trust.read(led)
    at = datetime.now(timezone.utc)
    d = trust.draft(t, MODEL, version, action, actor, "ok", "", {"tags": tags, "monitoring": BREACH}, at)
    insert_row(home, version, action, actor, {**d.fields["extra"], "signature": P[signer_name].sign(d.statement)},
               at=at)


def test_a_breach_sends_the_version_back_and_only_another_approvers_review_clears_it(home, adapter, cli, capsys):
    v = registered(adapter)  # approved by alice; carol requested it
    decision = approvals.record_monitoring(MODEL, v, BREACH, "monitoring: drift: embeddings")
    assert decision.action == "review_required" and status(v) == ApprovalStatus.REVIEW_REQUIRED
    with Ledger() as led:
        event = trust.read(led).events(model=MODEL, version=v)[-1]
    assert event.actor == "pipeline" and event.extra["monitoring"]["run_id"] == "run-1"
    # monitoring never moves the champion; MLflow mirrors the status
    assert registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION).version == int(v)
    assert plain_client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "review_required"
    # the policy's default: verify and loading warn, and say how to clear it
    report = loader.verify(f"{MODEL}/{v}")
    assert report.ok and report.warnings and "adaptrail review" in report.warnings[0]
    assert cli(["verify", MODEL, v]) == EXIT_OK and "[WARN] approval: review required" in capsys.readouterr().out
    assert ("high", "monitoring-review-required", v) in audit_findings()
    # not cleared by approving again, by the requester, or by the pipeline's key signing a review around the code
    with pytest.raises(approvals.DecisionRefused, match="review-required"):
        approvals.approve(MODEL, v, P["bob"], "looks fine")
    with pytest.raises(approvals.DecisionRefused, match="separation-of-duties"):
        approvals.review(MODEL, v, P["carol"], "my own run is fine")
    forge(home, v, "reviewed", "pipeline", "pipeline", {Tag.APPROVAL_STATUS: "approved"})
    assert status(v) == ApprovalStatus.REVIEW_REQUIRED
    with Ledger() as led:
        assert "may not sign `reviewed`" in trust.read(led).problems[-1].text
    assert ("critical", "unsigned-event", v) in audit_findings()
    # a review by another approver clears it: approved again, new review date, no open monitoring finding
    approvals.review(MODEL, v, P["bob"], "looked at the monitoring report: the new texts are still in scope")
    assert status(v) == ApprovalStatus.APPROVED and loader.verify(f"{MODEL}/{v}").warnings == []
    with Ledger() as led:
        own = trust.read(led).events(model=MODEL, version=v)
    assert monitoring_record.open_review(own) is None
    assert [h["open"] for h in monitoring_record.history(own)] == [False]
    assert not any(code == "monitoring-review-required" for _, code, _ in audit_findings())


@pytest.mark.parametrize("how", ["approver-signs-review-required", "monitored-sets-approved",
                                 "review-required-on-a-pending-version"])
def test_monitoring_events_that_break_the_rules_do_not_count(home, adapter, how):
    """An approver's key may not send a version back (that is the pipeline's statement); a `monitored` event sets
    no status; `review_required` applies to an approval in force only."""
    v = registered(adapter, approve=how != "review-required-on-a-pending-version")
    before = status(v)
    if how == "approver-signs-review-required":
        forge(home, v, "review_required", "alice", "alice", {Tag.APPROVAL_STATUS: "review_required"})
        expected = "may not sign `review_required`"
    elif how == "monitored-sets-approved":
        v = registered(adapter, approve=False)
        before = status(v)
        forge(home, v, "monitored", "pipeline", "pipeline", {Tag.APPROVAL_STATUS: "approved"})
        expected = "a `monitored` event may not set the status 'approved'"
    else:
        forge(home, v, "review_required", "pipeline", "pipeline", {Tag.APPROVAL_STATUS: "review_required"})
        expected = "a `review_required` event on a version that is pending"
    with Ledger() as led:
        t = trust.read(led)
    assert status(v) == before
    (problem,) = [p.text for p in t.problems if p.version == v]
    assert expected in problem


def test_the_signed_policy_can_make_a_version_under_review_refuse_to_load(home, adapter, cli, capsys):
    v = registered(adapter)
    approvals.record_monitoring(MODEL, v, BREACH, "monitoring: drift: embeddings")
    content = policy_admin.current().content | {"monitoring": {"on_review_required": "refuse"}}
    policy_admin.apply(Policy.parse(content), P["admin"], "breaches stop serving")
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED and "the policy refuses loading" in capsys.readouterr().out
    with pytest.raises(loader.LoadRefused, match="review required"):
        loader.predict(f"{MODEL}@champion", ["refund my invoice please"])
    assert loader.verify(f"{MODEL}/{v}", purpose="monitor").ok  # monitoring may still look at it
    approvals.review(MODEL, v, P["bob"], "retrained data is in scope again")
    assert cli(["verify", MODEL, v]) == EXIT_OK


def test_a_breach_recorded_under_refuse_keeps_refusing_when_the_policy_says_warn(home, adapter):
    """The stricter of the policy in force and what the breach recorded (the version's own, tightened settings)."""
    v = registered(adapter)
    approvals.record_monitoring(MODEL, v, BREACH | {"on_review_required": "refuse"}, "monitoring: drift")
    report = loader.verify(f"{MODEL}/{v}")
    assert not report.ok and "refuses loading" in report.reason


def test_a_training_config_tightens_the_policys_thresholds_but_never_loosens_them(home):
    policy = policy_admin.current()
    got, notes = monitoring_record.effective_thresholds(policy, {
        "max_embedding_auc": 0.95, "max_prediction_psi": 0.05, "on_review_required": "refuse",
        "max_accuracy_drop": None})
    assert got["max_embedding_auc"] == policy.monitoring.max_embedding_auc  # looser: ignored, and said so
    assert any("max_embedding_auc=0.95 is looser" in n for n in notes)
    assert got["max_prediction_psi"] == 0.05 and got["on_review_required"] == "refuse"
    assert got["max_accuracy_drop"] == policy.monitoring.max_accuracy_drop and got["min_rows"] == 100
    looser_policy = Policy.parse(policy.content | {"monitoring": {"on_review_required": "refuse"}})
    got, _ = monitoring_record.effective_thresholds(looser_policy, {"on_review_required": "warn"})
    assert got["on_review_required"] == "refuse"



def test_a_version_held_for_review_does_not_outlive_its_review_date(home, adapter):
    """Under `warn` a version in review_required still loads; past its review date it must not: verify refuses it as
    expired, and the expiry sweep counts it as overdue like an approved one (expiring it is then a rule it keeps)."""
    v = registered(adapter)
    approvals.record_monitoring(MODEL, v, BREACH, "monitoring: drift")
    later = datetime.now(timezone.utc) + timedelta(days=400)
    assert loader.verify(f"{MODEL}/{v}").ok  # today: warned, loads
    report = loader.verify(f"{MODEL}/{v}", now=later)
    assert not report.ok and "expired" in report.reason
    with Ledger() as led:
        own = trust.read(led).events(model=MODEL, version=v)
    assert approvals.is_overdue(approvals.ledger_tags(own), later)
    assert approvals.expire_overdue(MODEL) == []  # not due today: nothing expires early
