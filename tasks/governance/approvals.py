"""Approval decisions (approve, reject, revoke, review, expire): the rules, the ledger first, then MLflow tags.

The ledger's view of a version is in ``ledger_view``, the rules in ``rules``. :func:`reconcile` repairs tags and
alias that disagree with the ledger (a crash between the two writes, a hand edit): every decision repairs the
version's tags first and, once it is accepted, the champion alias, so an interrupted decision is finished by the
next one and a refused one moves nothing. Rejecting and revoking only withdraw, so the requester may
do them too. A revoked version is never approved again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from mlflow.tracking import MlflowClient

from tasks.core import state
from tasks.core.errors import InputError
from tasks.core.names import ACTOR_EXPIRY, ALIAS_CANDIDATE, ALIAS_CHAMPION, ApprovalStatus, Tag  # noqa: F401
from tasks.governance import registry
from tasks.governance.ledger import Ledger, LedgerConflict, LedgerEvent, evidence_digest
# Re-exported: the decisions' API reads as one module (approvals.record_registration, approvals.Policy, ...).
from tasks.governance.ledger_view import (FACT_TAGS, LEDGER_ONLY_TAGS, STATUS_OF, _v, approved_in_date,  # noqa: F401
                                          disagreements, expected_champion, identity_of, identity_problem, is_overdue,
                                          ledger_tags, state_tags, utc_now, decision_time)
from tasks.governance.registration import record_registration  # noqa: F401
from tasks.governance.rules import DecisionRefused, Policy, check_override, require_decider

log = logging.getLogger("adaptrail")

@dataclass
class Decision:
    """What a decision did. ``seq`` is None and ``changed`` False when it was already in effect."""

    model: str
    version: str
    action: str
    status: str
    actor: str
    reason: str
    at: str
    seq: int | None
    changed: bool
    champion: str | None
    successor: str | None = None
    repaired: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# --- the ledger's view of a version ---------------------------------------------------------------------


def tag_ledger_disagreements(model: str, version: str | int) -> list[str]:
    """Where the version's MLflow tags (and the champion alias) disagree with the ledger; the audit reads this."""
    c, version = registry.client(), str(version)
    mv = registry.model_version(c, model, version)
    with Ledger() as led:
        events = led.events(model=model)
    return disagreements(model, version, mv.tags, events, _champion(c, model), identity_of(mv))


def reconcile(model: str, version: str | int) -> list[str]:
    """Make the version's tags and the champion alias agree with the ledger; returns what was repaired."""
    with Ledger() as led:
        return _reconcile(registry.client(), led, model, str(version))


# --- decisions ------------------------------------------------------------------------------------------


def approve(model: str, version: str | int, actor: str, reason: str, *, override: bool = False,
            second_approver: str | None = None, now: datetime | None = None, policy: Policy | None = None
            ) -> Decision:
    """Approve a version and make it champion (rules: allow-list, separation of duties, override for failed gates)."""
    policy, now, version = policy or Policy.resolve(), decision_time(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        require_decider(s, policy, actor, reason, separate_from_requester="approve")
        if s.status == ApprovalStatus.REVOKED:
            raise DecisionRefused("revoked", f"{model} v{version} was revoked; it cannot be approved again. Train "
                                  "and register a new version")
        if s.status == ApprovalStatus.APPROVED and s.champion == version and not is_overdue(s.view, now):
            return s.unchanged("approved", "already approved and champion; nothing recorded")
        failed, approvers, tags = _approval(s, policy, actor, reason, override, second_approver)
        if policy.private_key:
            tags |= _sign(s, policy.private_key)
        action = "overridden" if failed else "approved"
        event = _record(s, action, actor, reason, tags, now, policy, approvers=approvers, failed_gates=failed,
                        previous_champion=s.champion)
        registry.set_alias(s.c, model, ALIAS_CHAMPION, version)
        _drop_alias(s, ALIAS_CANDIDATE)
        note = f" overriding failed gates ({', '.join(failed)})" if failed else ""
        return s.changed(event, version, f"approved{note}; alias {ALIAS_CHAMPION} -> v{version} "
                         f"(was {_v(s.champion)}); review due {tags[Tag.REVIEW_DUE]}")


def reject(model: str, version: str | int, actor: str, reason: str, *, now: datetime | None = None,
           policy: Policy | None = None) -> Decision:
    """Reject a pending (or gate-rejected) version; an approved one is withdrawn with :func:`revoke`."""
    policy, now, version = policy or Policy.resolve(), decision_time(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        require_decider(s, policy, actor, reason)
        if s.status in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED, ApprovalStatus.REVOKED):
            raise DecisionRefused("use-revoke", f"{model} v{version} is {s.status}; an approval is withdrawn with "
                                  f"`adaptrail revoke {model} {version} --reason ...`")
        if s.last_decision == "rejected":
            return s.unchanged("rejected", "already rejected; nothing recorded")
        tags = state_tags(ApprovalStatus.REJECTED, actor, now, reason, s.view.get(Tag.REVIEW_DUE, ""))
        event = _record(s, "rejected", actor, reason, tags, now, policy)
        _drop_alias(s, ALIAS_CANDIDATE)
        return s.changed(event, s.champion, "rejected")


def revoke(model: str, version: str | int, actor: str, reason: str, *, now: datetime | None = None,
           policy: Policy | None = None) -> Decision:
    """Withdraw an approval; removes alias champion from this version and names (never sets) a successor."""
    policy, now, version = policy or Policy.resolve(), decision_time(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        require_decider(s, policy, actor, reason)
        if s.status == ApprovalStatus.REVOKED:
            return s.unchanged("revoked", "already revoked; nothing recorded")
        if s.status not in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED):
            raise DecisionRefused("not-approved", f"{model} v{version} is {s.status}, not approved; nothing to "
                                  f"revoke (use `adaptrail reject`)")
        tags = state_tags(ApprovalStatus.REVOKED, actor, now, reason, s.view.get(Tag.REVIEW_DUE, ""))
        was_champion = s.champion == version
        event = _record(s, "revoked", actor, reason, tags, now, policy, was_champion=was_champion)
        if was_champion:
            s.c.delete_registered_model_alias(model, ALIAS_CHAMPION)
        successor = _successor(led, model, exclude=version, now=now)
        if not was_champion:
            msg = f"revoked; it was not champion (champion stays {_v(s.champion)})"
        elif successor:
            msg = (f"revoked; alias {ALIAS_CHAMPION} removed. v{successor} is approved and in date: make it champion "
                   f"with `adaptrail approve {model} {successor} --reason ...`")
        else:
            msg = f"revoked; alias {ALIAS_CHAMPION} removed. No other approved, in-date version: nothing is champion"
        decision = s.changed(event, None if was_champion else s.champion, msg)
        decision.successor = successor
        return decision


def review(model: str, version: str | int, actor: str, reason: str, *, override: bool = False,
           second_approver: str | None = None, now: datetime | None = None, policy: Policy | None = None
           ) -> Decision:
    """Re-review an approved (or expired) version: renews ``review.due``; same rules as approving."""
    policy, now, version = policy or Policy.resolve(), decision_time(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        require_decider(s, policy, actor, reason, separate_from_requester="review")
        if s.status not in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED):
            raise DecisionRefused("not-approved", f"{model} v{version} is {s.status}; only approved or expired "
                                  "versions are reviewed (use `adaptrail approve`)")
        failed, approvers, tags = _approval(s, policy, actor, reason, override, second_approver)
        event = _record(s, "reviewed", actor, reason, tags, now, policy, approvers=approvers, failed_gates=failed)
        return s.changed(event, s.champion, f"reviewed; review due {tags[Tag.REVIEW_DUE]}")


def expire_overdue(model: str | None = None, now: datetime | None = None) -> list[Decision]:
    """Mark approved versions whose ``review.due`` has passed as ``expired`` (ledger event ``expired``)."""
    now = decision_time(now)
    out: list[Decision] = []
    with Ledger() as led:
        by_version: dict[tuple[str, str], list[LedgerEvent]] = {}
        for e in led.events(model=model):
            by_version.setdefault((e.model, e.version), []).append(e)
        for (m, v), events in sorted(by_version.items()):
            if not is_overdue(ledger_tags(events), now):
                continue
            try:
                s = _prepare(led, m, v, now)
            except InputError as err:  # deleted from MLflow: the audit reports it
                log.warning("cannot expire %s v%s: %s", m, v, err)
                continue
            due = s.view[Tag.REVIEW_DUE]
            reason = f"review.due {due} passed without a review"
            tags = state_tags(ApprovalStatus.EXPIRED, ACTOR_EXPIRY, now, reason, due)
            event = _record(s, "expired", ACTOR_EXPIRY, reason, tags, now, None)
            out.append(s.changed(event, s.champion, f"expired: {reason}; re-review with `adaptrail review {m} {v}`"))
    return out


def approved_versions(model: str, now: datetime | None = None) -> list[str]:
    """Versions the ledger says are approved and in date, most recently approved first (a read: any ``now``)."""
    now = utc_now(now)
    with Ledger() as led:
        return approved_in_date(led.events(model=model), now)


# --- plumbing -------------------------------------------------------------------------------------------


@dataclass
class _Subject:
    """One version as a decision sees it: the ledger's record (``events``, and ``champion`` as the ledger implies
    it). Its tags are repaired from the ledger first; the champion alias only once a decision is accepted
    (:meth:`repair`), so a refused decision never moves it."""

    c: MlflowClient
    led: Ledger
    model: str
    version: str
    events: list[LedgerEvent]
    champion: str | None
    repaired: list[str]
    now: datetime

    @property
    def view(self) -> dict[str, str]:
        return ledger_tags(self.events)

    @property
    def status(self) -> str:
        return self.view.get(Tag.APPROVAL_STATUS, "")

    @property
    def last_decision(self) -> str | None:
        """The action of the last event that set the approval status."""
        setters = [e for e in self.events if Tag.APPROVAL_STATUS in (e.extra.get("tags") or {}) or
                   (not e.extra.get("tags") and e.action in STATUS_OF)]
        return setters[-1].action if setters else None

    def repair(self) -> None:
        """Once a decision is accepted: MLflow's aliases (and tags) agree with the ledger again."""
        self.repaired = list(dict.fromkeys(self.repaired + _reconcile(self.c, self.led, self.model, self.version)))

    def unchanged(self, action: str, message: str) -> Decision:
        self.repair()
        v = self.view
        return Decision(self.model, self.version, action, self.status, v.get(Tag.APPROVAL_BY, ""),
                        v.get(Tag.APPROVAL_REASON, ""), v.get(Tag.APPROVAL_AT, ""), None, False, self.champion,
                        repaired=self.repaired, message=message)

    def changed(self, event: LedgerEvent, champion: str | None, message: str) -> Decision:
        tags = event.extra["tags"]
        return Decision(self.model, self.version, event.action, tags[Tag.APPROVAL_STATUS], event.actor,
                        event.reason, tags[Tag.APPROVAL_AT], event.seq, True, champion, repaired=self.repaired,
                        message=message)


def _prepare(led: Ledger, model: str, version: str, now: datetime) -> _Subject:
    """Load the version as the ledger records it; refuse it unless the ledger registered this very version.

    MLflow tags are never facts: a version the register step did not record (created in MLflow by hand, or before
    the ledger) is refused, not back-filled from its tags.
    """
    c = registry.client()
    mv = registry.model_version(c, model, version)
    own = led.events(model=model, version=version)
    if not any(e.action == "registered" for e in own):
        raise DecisionRefused("not-registered", f"{model} v{version} has no `registered` event in the ledger: the "
                              "register step never recorded it (created outside adaptrail, before the ledger, or in "
                              "another ledger), so its gates are not on record. Train and register it through the "
                              "train_adapter flow")
    other = identity_problem(model, version, own, identity_of(mv))
    if other:
        raise DecisionRefused("version-identity", other)
    repaired = _reconcile(c, led, model, version, aliases=False)  # tags only: a refusal moves no alias
    champion = expected_champion(led.events(model=model))
    return _Subject(c, led, model, version, own, champion, repaired, now)


def _reconcile(c: MlflowClient, led: Ledger, model: str, version: str, aliases: bool = True) -> list[str]:
    """Repair the version's tags (and with ``aliases`` the champion alias) from the ledger; returns the problems."""
    mv = registry.model_version(c, model, version)
    model_events = led.events(model=model)
    own = [e for e in model_events if e.version == version]
    if not any(e.action == "registered" for e in own) or identity_problem(model, version, own, identity_of(mv)):
        return []  # not the ledger's version: nothing of the ledger's belongs on it (the audit reports it)
    champion = _champion(c, model)
    problems = disagreements(model, version, mv.tags, model_events, champion, identity_of(mv))
    if not problems:
        return []
    want = ledger_tags(own)
    for key, value in want.items():
        if mv.tags.get(key) != value:
            c.set_model_version_tag(model, version, key, value)
    for key in LEDGER_ONLY_TAGS:
        if key in mv.tags and key not in want:
            c.delete_model_version_tag(model, version, key)
    should = expected_champion(model_events)
    if not aliases:
        pass
    elif should == version and champion != version:
        registry.set_alias(c, model, ALIAS_CHAMPION, version)
    elif champion == version and should != version:
        if should is None:
            c.delete_registered_model_alias(model, ALIAS_CHAMPION)
        else:
            registry.set_alias(c, model, ALIAS_CHAMPION, should)
    log.warning("repaired %s v%s from the ledger: %s", model, version, "; ".join(problems))
    return problems


def _record(s: _Subject, action: str, actor: str, reason: str, tags: dict[str, str], now: datetime,
            policy: Policy | None, **extra: Any) -> LedgerEvent:
    """Ledger first (only if the version's history is still the one the rules checked), then the MLflow tags (a crash
    in between is repaired by the next call's reconcile)."""
    facts = {k: v for k, v in s.view.items() if k in FACT_TAGS}
    meta = {"tags": tags, "previous_status": s.status, "invoked_by": state.os_user(), **extra}
    if policy is not None:
        meta["allow_list"] = policy.source
    s.repair()
    try:  # compare-and-swap: the rules above were checked against exactly this history
        event = s.led.append(s.model, s.version, action, actor, reason, evidence_digest(facts), meta, at=now,
                             expect_last=s.events[-1].seq if s.events else None)
    except LedgerConflict as err:
        raise DecisionRefused("concurrent-decision", str(err)) from None
    _mirror(s.c, s.model, s.version, tags)
    return event


def _mirror(c: MlflowClient, model: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(model, version, key, value)


def _approval(s: "_Subject", policy: Policy, actor: str, reason: str, override: bool, second: str | None
              ) -> tuple[list[str], list[str], dict[str, str]]:
    """What approving and reviewing share once their own checks passed: the override rule (the failed gates it
    covers), who approved, and the approved state with a fresh review due date."""
    failed = check_override(s, policy, actor, override, second)
    approvers = [actor, second] if failed else [actor]
    due = _due(s.now, policy)
    return failed, approvers, state_tags(ApprovalStatus.APPROVED, ", ".join(approvers), s.now, reason, due)


def _due(now: datetime, policy: Policy) -> str:
    return (now.astimezone(timezone.utc) + timedelta(days=policy.review_period_days)).date().isoformat()


def _sign(s: _Subject, private_key: str) -> dict[str, str]:
    """Sign the stored manifest, after checking it is the one whose digest the ledger recorded."""
    from tasks.governance.loader import fetch_manifest
    from tasks.governance.signing import sign_manifest

    manifest_bytes, digest = fetch_manifest(s.c.get_model_version(s.model, s.version).source)
    if digest != s.view.get(Tag.ADAPTER_DIGEST):
        raise DecisionRefused("adapter-digest", f"the stored manifest's digest {digest[:16]}... is not the "
                              f"registered adapter.digest {s.view.get(Tag.ADAPTER_DIGEST, '')[:16]}...; not signing")
    return sign_manifest(manifest_bytes, private_key)


def _successor(led: Ledger, model: str, exclude: str, now: datetime) -> str | None:
    return next((v for v in approved_in_date(led.events(model=model), now) if v != exclude), None)


def _drop_alias(s: _Subject, alias: str) -> None:
    current = registry.version_by_alias(s.c, s.model, alias)
    if current is not None and str(current.version) == s.version:
        s.c.delete_registered_model_alias(s.model, alias)


def _champion(c: MlflowClient, model: str) -> str | None:
    mv = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    return str(mv.version) if mv is not None else None
