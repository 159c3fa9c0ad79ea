"""Approval decisions (approve, reject, revoke, review, expire): the rules, the ledger first, then MLflow tags.

The ledger's view of a version is in ``ledger_view``, the rules in ``rules``. :func:`reconcile` repairs tags and
alias that disagree with the ledger (a crash between the two writes, a hand edit): every decision repairs the
version's tags first and, once it is accepted, the champion alias, so an interrupted decision is finished by the
next one and a refused one moves nothing. Rejecting and revoking only withdraw, so the requester may
do them too. A revoked version is never approved again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import Any

from tasks.core.errors import InputError
from tasks.core.names import ACTOR_EXPIRY, ALIAS_CANDIDATE, ALIAS_CHAMPION, ApprovalStatus, Tag  # noqa: F401
from tasks.governance import card, events as prefect_events, keys, registry, trust
from tasks.governance.ledger import Ledger, LedgerConflict, LedgerEvent, LedgerTimeConflict
# Re-exported: the decisions' API reads as one module (approvals.record_registration, approvals.Policy, ...).
from tasks.governance.ledger_view import (_v, approved_in_date, decision_time, disagreements,  # noqa: F401
                                          expected_champion, identity_of, is_overdue, ledger_tags, state_tags,
                                          utc_now)
from tasks.governance.policy import Policy  # noqa: F401
from tasks.governance.registration import record_registration  # noqa: F401
from tasks.governance.rules import DecisionRefused, check_override, require_decider
from tasks.governance.subject import (Decision, Plan, Subject, champion_of, drop_alias, mirror, prepare,  # noqa: F401
                                      reconcile_version)

log = logging.getLogger("adaptrail")
#: An approval that is (or was) in force: reviewed, revoked or withdrawn, never approved afresh or rejected.
IN_USE = (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED, ApprovalStatus.REVIEW_REQUIRED)

# --- the ledger's view of a version ---------------------------------------------------------------------


def tag_ledger_disagreements(model: str, version: str | int) -> list[str]:
    """Where the version's MLflow tags (and the champion alias) disagree with the ledger; the audit reads this."""
    c, version = registry.client(), str(version)
    mv = registry.model_version(c, model, version)
    with Ledger() as led:
        events = trust.read(led).events(model=model)
    return disagreements(model, version, mv.tags, events, champion_of(c, model), identity_of(mv))


def reconcile(model: str, version: str | int) -> list[str]:
    """Make the version's tags and the champion alias agree with the ledger; returns what was repaired."""
    with Ledger() as led:
        return reconcile_version(registry.client(), led, model, str(version))


# --- decisions: planned (rules checked, nothing written), signed, committed --------------------------------


class _TimeConflict(DecisionRefused):
    """Another writer appended an event dated after this statement's time; nothing was written."""


def plan(kind: str, model: str, version: str | int, person: str, reason: str, *, override: bool = False,
         now: datetime | None = None) -> "Plan | Decision":
    """Check the rules for ``person``'s decision; a :class:`Plan` to sign, or a :class:`Decision` when it is
    already in effect. Nothing is written."""
    now, version = decision_time(now), str(version)
    with Ledger() as led:
        s = prepare(led, model, version, now)
        return _RULES[kind](s, person, reason, override)


def execute(p: Plan, signature: str) -> Decision:
    """Record a planned decision with its signature (checked against the policy now in force), then mirror it to
    MLflow: tags, and the champion alias."""
    s = p.subject
    with Ledger() as led:
        s.led, s.trust = led, trust.read(led)
        s.repair()
        try:  # compare-and-swap: the rules were checked against exactly this history
            event = trust.commit(led, p.draft, signature, s.trust.require_policy())
        except LedgerTimeConflict as err:
            raise _TimeConflict("concurrent-decision", str(err)) from None
        except LedgerConflict as err:
            raise DecisionRefused("concurrent-decision", str(err)) from None
        except trust.SignatureRefused as err:
            raise DecisionRefused("signature", str(err)) from None
        mirror(s.c, s.model, s.version, event.extra.get("tags") or {})
        decision = _AFTER[p.kind](p, event)
    card.refresh(s.model, s.version)  # the adapter card and the version's description show the decision
    prefect_events.notify(event, s.events)  # a notification, after the commit: never fails the decision
    return decision


def decide(kind: str, model: str, version: str | int, signer: keys.Signer, reason: str, *, override: bool = False,
           now: datetime | None = None) -> Decision:
    """Plan, sign with ``signer`` (whose key names the person deciding) and record a decision (the CLI's path)."""
    with Ledger() as led:
        person = trust.person_of(trust.read(led).require_policy(), signer)
    return _sign_and_record(lambda: plan(kind, model, version, person, reason, override=override, now=now), signer,
                            now)


def _sign_and_record(make: Callable[[], "Plan | Decision"], signer: keys.Signer, now: datetime | None) -> Decision:
    """Make the plan (rules checked), sign it and record it; when another writer appended a later event first, the
    plan is made and signed again, now (at most three times; never for a given ``now``)."""
    for attempt in range(3):
        p = make()
        if isinstance(p, Decision):
            return p
        try:
            return execute(p, signer.sign(p.statement))
        except _TimeConflict:
            if now is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def approve(model: str, version: str | int, signer: keys.Signer, reason: str, *, override: bool = False,
            now: datetime | None = None) -> Decision:
    """Approve a version and make it champion (rules: approver, separation of duties, override for failed gates)."""
    return decide("approve", model, version, signer, reason, override=override, now=now)


def reject(model: str, version: str | int, signer: keys.Signer, reason: str, *, now: datetime | None = None
           ) -> Decision:
    """Reject a pending (or gate-rejected) version; an approved one is withdrawn with :func:`revoke`."""
    return decide("reject", model, version, signer, reason, now=now)


def revoke(model: str, version: str | int, signer: keys.Signer, reason: str, *, now: datetime | None = None
           ) -> Decision:
    """Withdraw an approval (final); removes alias champion from this version and names (never sets) a successor."""
    return decide("revoke", model, version, signer, reason, now=now)


def review(model: str, version: str | int, signer: keys.Signer, reason: str, *, override: bool = False,
           now: datetime | None = None) -> Decision:
    """Re-review an approved (or expired) version: renews ``review.due``; same rules as approving."""
    return decide("review", model, version, signer, reason, override=override, now=now)


def _plan_approve(s: Subject, person: str, reason: str, override: bool) -> "Plan | Decision":
    require_decider(s, s.policy, person, reason, separate_from_requester="approve")
    if s.status == ApprovalStatus.REVOKED:
        raise DecisionRefused("revoked", f"{s.model} v{s.version} was revoked; it cannot be approved again. Train "
                              "and register a new version")
    if s.status == ApprovalStatus.REVIEW_REQUIRED:
        raise DecisionRefused("review-required", f"monitoring sent {s.model} v{s.version} back for review; a person "
                              f"clears that with `adaptrail review {s.model} {s.version} --reason ...`")
    if s.status == ApprovalStatus.APPROVED and s.champion == s.version and not is_overdue(s.view, s.now):
        return s.unchanged("approved", "already approved and champion; nothing recorded")
    return _approval(s, "approved", person, reason, override, previous_champion=s.champion)


def _plan_review(s: Subject, person: str, reason: str, override: bool) -> "Plan | Decision":
    require_decider(s, s.policy, person, reason, separate_from_requester="review")
    if s.status not in IN_USE:
        raise DecisionRefused("not-approved", f"{s.model} v{s.version} is {s.status}; only approved, expired or "
                              "review_required versions are reviewed (use `adaptrail approve`)")
    return _approval(s, "reviewed", person, reason, override)


def _plan_reject(s: Subject, person: str, reason: str, override: bool) -> "Plan | Decision":
    require_decider(s, s.policy, person, reason)
    if s.status in (*IN_USE, ApprovalStatus.REVOKED):
        raise DecisionRefused("use-revoke", f"{s.model} v{s.version} is {s.status}; an approval is withdrawn with "
                              f"`adaptrail revoke {s.model} {s.version} --reason ...`")
    if s.last_decision == "rejected":
        return s.unchanged("rejected", "already rejected; nothing recorded")
    tags = state_tags(ApprovalStatus.REJECTED, person, s.now, reason, s.view.get(Tag.REVIEW_DUE, ""))
    return s.plan("reject", "rejected", person, reason, tags)


def _plan_revoke(s: Subject, person: str, reason: str, override: bool) -> "Plan | Decision":
    require_decider(s, s.policy, person, reason)
    if s.status == ApprovalStatus.REVOKED:
        return s.unchanged("revoked", "already revoked; nothing recorded")
    if s.status not in IN_USE:
        raise DecisionRefused("not-approved", f"{s.model} v{s.version} is {s.status}, not approved; nothing to "
                              f"revoke (use `adaptrail reject`)")
    tags = state_tags(ApprovalStatus.REVOKED, person, s.now, reason, s.view.get(Tag.REVIEW_DUE, ""))
    return s.plan("revoke", "revoked", person, reason, tags, was_champion=s.champion == s.version)


def _approval(s: Subject, action: str, person: str, reason: str, override: bool, **extra: Any) -> Plan:
    """What approving and reviewing share: the override rule. A first override records ``overridden`` awaiting a
    second approver (the state is unchanged); otherwise the approved state with a fresh review due date."""
    failed, first = check_override(s, person, override)
    kind = "approve" if action == "approved" else "review"
    if failed and first is None:
        p = s.plan(kind, "overridden", person, reason, {}, awaiting_second=True, failed_gates=failed)
        p.first_override = True
        return p
    approvers = [first.actor, person] if first is not None else [person]
    due = (s.now.astimezone(timezone.utc) + timedelta(days=s.policy.review_period_days)).date().isoformat()
    tags = state_tags(ApprovalStatus.APPROVED, ", ".join(approvers), s.now, reason, due)
    confirms = {"confirms": first.seq} if first is not None else {}
    return s.plan(kind, action, person, reason, tags, approvers=approvers, failed_gates=failed, **confirms, **extra)


def _after_approve(p: Plan, event: LedgerEvent) -> Decision:
    s = p.subject
    if p.first_override:
        return s.changed(event, s.champion, f"first override recorded (gates failed: "
                         f"{', '.join(event.extra['failed_gates'])}); a second approver confirms with `adaptrail "
                         f"{p.kind} {s.model} {s.version} --override --reason ...`")
    if p.kind == "review":
        return s.changed(event, s.champion, f"reviewed; review due {event.extra['tags'][Tag.REVIEW_DUE]}")
    registry.set_alias(s.c, s.model, ALIAS_CHAMPION, s.version)
    drop_alias(s, ALIAS_CANDIDATE)
    failed = event.extra.get("failed_gates") or []
    note = f" overriding failed gates ({', '.join(failed)})" if failed else ""
    return s.changed(event, s.version, f"approved{note}; alias {ALIAS_CHAMPION} -> v{s.version} "
                     f"(was {_v(s.champion)}); review due {event.extra['tags'][Tag.REVIEW_DUE]}")


def _after_reject(p: Plan, event: LedgerEvent) -> Decision:
    drop_alias(p.subject, ALIAS_CANDIDATE)
    return p.subject.changed(event, p.subject.champion, "rejected")


def _after_revoke(p: Plan, event: LedgerEvent) -> Decision:
    s = p.subject
    was_champion = bool(event.extra.get("was_champion"))
    if was_champion and champion_of(s.c, s.model) == s.version:
        s.c.delete_registered_model_alias(s.model, ALIAS_CHAMPION)
    successor = next((v for v in approved_in_date(s.trust.events(model=s.model) + [event], s.now)
                      if v != s.version), None)
    if not was_champion:
        msg = f"revoked; it was not champion (champion stays {_v(s.champion)})"
    elif successor:
        msg = (f"revoked; alias {ALIAS_CHAMPION} removed. v{successor} is approved and in date: make it champion "
               f"with `adaptrail approve {s.model} {successor} --reason ...`")
    else:
        msg = f"revoked; alias {ALIAS_CHAMPION} removed. No other approved, in-date version: nothing is champion"
    decision = s.changed(event, None if was_champion else s.champion, msg)
    decision.successor = successor
    return decision


_RULES = {"approve": _plan_approve, "review": _plan_review, "reject": _plan_reject, "revoke": _plan_revoke}
_AFTER = {"approve": _after_approve, "review": _after_approve, "reject": _after_reject, "revoke": _after_revoke,
          "expire": lambda p, e: p.subject.changed(e, p.subject.champion, f"expired: {e.reason}"),
          "monitor": lambda p, e: p.subject.changed(e, p.subject.champion, e.reason)}


def expire_overdue(model: str | None = None, now: datetime | None = None) -> list[Decision]:
    """Mark approved versions whose ``review.due`` has passed as ``expired``, signed by the service key."""
    now = decision_time(now)
    out: list[Decision] = []
    with Ledger() as led:
        t = trust.read(led)
        by_version: dict[tuple[str, str], list[LedgerEvent]] = {}
        for e in t.events(model=model):
            by_version.setdefault((e.model, e.version), []).append(e)
    overdue = [(m, v) for (m, v), events in sorted(by_version.items()) if is_overdue(ledger_tags(events), now)]
    if not overdue:
        return out
    signer = trust.service_signer()
    for m, v in overdue:
        try:
            with Ledger() as led:
                s = prepare(led, m, v, now)
                person = trust.person_of(s.policy, signer) if s.trust.policy else ACTOR_EXPIRY
        except InputError as err:  # deleted from MLflow, or no service key in the policy: the audit reports it
            log.warning("cannot expire %s v%s: %s", m, v, err)
            continue
        due = s.view[Tag.REVIEW_DUE]
        reason = f"review.due {due} passed without a review"
        p = s.plan("expire", "expired", person, reason, state_tags(ApprovalStatus.EXPIRED, person, now, reason, due))
        out.append(execute(p, signer.sign(p.statement)) if s.trust.policy else _unsigned(p))
    return out


def record_monitoring(model: str, version: str | int, result: dict[str, Any], reason: str,
                      now: datetime | None = None) -> Decision:
    """A monitoring run's ledger event, signed by the pipeline's service key: ``review_required`` when ``result``
    is a breach of an approved version (its status changes; the champion alias does not), else ``monitored``
    (no status change). ``result``: aggregates only (outcome, run id, rows, breaches; never texts)."""
    signer = trust.service_signer()

    def make() -> Plan:
        with Ledger() as led:
            s = prepare(led, model, str(version), decision_time(now))
            person = trust.person_of(s.policy, signer)
        if result.get("outcome") == "breach" and s.status == ApprovalStatus.APPROVED:
            return s.plan("monitor", "review_required", person, reason,
                          {Tag.APPROVAL_STATUS: str(ApprovalStatus.REVIEW_REQUIRED)}, monitoring=dict(result))
        return s.plan("monitor", "monitored", person, reason, {}, monitoring=dict(result))

    return _sign_and_record(make, signer, now)


def approved_versions(model: str, now: datetime | None = None) -> list[str]:
    """Versions the ledger says are approved and in date, most recently approved first (a read: any ``now``)."""
    now = utc_now(now)
    with Ledger() as led:
        return approved_in_date(trust.read(led).events(model=model), now)


# --- plumbing -------------------------------------------------------------------------------------------


def _unsigned(p: Plan) -> Decision:
    """Only while the ledger holds no policy yet (a ledger from before signing): the event is recorded unsigned."""
    f, s = p.draft.fields, p.subject
    event = s.led.append(f["model"], f["version"], f["action"], f["actor"], f["reason"], f["evidence_digest"],
                         f["extra"], f["at"], expect_last=p.draft.expect_last)
    mirror(s.c, s.model, s.version, event.extra.get("tags") or {})
    prefect_events.notify(event, s.events)
    return _AFTER[p.kind](p, event)
