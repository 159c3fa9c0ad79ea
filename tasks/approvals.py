"""Approval decisions (approve, reject, revoke, review, expire): the rules, the ledger first, then MLflow tags.

The ledger is the record and MLflow tags mirror it. Each event stores in ``extra["tags"]`` the tags it sets, so
the tags a version must carry are the overlay of its events in seq order (:func:`ledger_tags`), and the
``champion`` alias follows from the model's approvals and revocations (:func:`expected_champion`).
:func:`reconcile` repairs tags and alias that disagree (a crash between the two writes, a hand edit); every
decision calls it first, so an interrupted decision is finished by the next one.

Rules: every decision needs a reason and an allow-listed identity; approving and reviewing also need an identity
other than the run's requester, and, when a gate failed, ``override`` with a second, distinct approver. Rejecting
and revoking only withdraw, so the requester may do them too. A revoked version is never approved again.

Identities are compared case-insensitively. They are claims (``ADAPTRAIL_USER``, ``--as``); the ledger records
them with the OS user that ran the command and where the allow-list came from.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import registry, state
from tasks.config import ApprovalConfig
from tasks.errors import InputError
from tasks.ledger import Ledger, LedgerEvent, evidence_digest
from tasks.names import ALIAS_CANDIDATE, ALIAS_CHAMPION, ApprovalStatus, GateOutcome, GATES, Tag
from tasks.signing import TAG_SIGNATURE, TAG_SIGNATURE_KEY

log = logging.getLogger("adaptrail")

ACTOR_GATES = "adaptrail/gates"
ACTOR_EXPIRY = "adaptrail/expiry"
ACTOR_BACKFILL = "adaptrail/backfill"
DEFAULT_REVIEW_PERIOD_DAYS = 182

ENV_APPROVERS = "ADAPTRAIL_APPROVERS"
ENV_REVIEW_PERIOD_DAYS = "ADAPTRAIL_REVIEW_PERIOD_DAYS"
ENV_PUBLIC_KEY = "ADAPTRAIL_PUBLIC_KEY"
ENV_PRIVATE_KEY = "ADAPTRAIL_SIGNING_KEY"

#: The approval state a decision sets; mirrored from the ledger.
STATE_TAGS = (Tag.APPROVAL_STATUS, Tag.APPROVAL_BY, Tag.APPROVAL_AT, Tag.APPROVAL_REASON, Tag.REVIEW_DUE)
#: What was registered; recorded once in the ``registered`` event, so a hand edit of these is detected too.
FACT_TAGS = (Tag.GATE_VALIDATION, Tag.GATE_BIAS, Tag.GATE_REGRESSION, Tag.DATASET_DIGEST, Tag.BASE_MODEL,
             Tag.BASE_MODEL_REVISION, Tag.BASE_MODEL_DIGEST, Tag.REQUESTED_BY, Tag.ADAPTER_DIGEST)
#: Present only when the ledger says so (a signature tag the ledger never saw is a disagreement).
LEDGER_ONLY_TAGS = (TAG_SIGNATURE, TAG_SIGNATURE_KEY)

APPROVING = ("approved", "overridden")
# Status implied by an event written without extra["tags"] (not by this module).
_STATUS_OF = {"approved": ApprovalStatus.APPROVED, "overridden": ApprovalStatus.APPROVED,
              "reviewed": ApprovalStatus.APPROVED, "rejected": ApprovalStatus.REJECTED,
              "gate_failed": ApprovalStatus.REJECTED, "expired": ApprovalStatus.EXPIRED,
              "revoked": ApprovalStatus.REVOKED}


class DecisionRefused(InputError):
    """A decision broke a rule; nothing was written. ``rule`` names it (allow-list, separation-of-duties, ...)."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(f"refused ({rule}): {message}")


@dataclass(frozen=True)
class Policy:
    """Who may decide, how long an approval lasts, which keys sign and verify. Built by :meth:`resolve`."""

    approvers: tuple[str, ...] = ()
    review_period_days: int = DEFAULT_REVIEW_PERIOD_DAYS
    public_key: str | None = None
    private_key: str | None = None
    source: str = "none"  # where the allow-list came from; recorded in the ledger

    @classmethod
    def resolve(cls, approval: ApprovalConfig | None = None, review_period_days: int | None = None) -> "Policy":
        """Config values where given, else the environment (``ADAPTRAIL_APPROVERS`` etc.), else defaults."""
        if approval is not None and approval.approvers:
            approvers, source = tuple(approval.approvers), "config approval.approvers"
        elif os.environ.get(ENV_APPROVERS, "").strip():
            approvers = tuple(a.strip() for a in os.environ[ENV_APPROVERS].split(",") if a.strip())
            source = f"env {ENV_APPROVERS}"
        else:
            approvers, source = (), "none"
        days = review_period_days or _env_days()
        public = (approval.public_key if approval else None) or os.environ.get(ENV_PUBLIC_KEY) or None
        private = (approval.private_key if approval else None) or os.environ.get(ENV_PRIVATE_KEY) or None
        return cls(approvers, days, public, private, source)

    def allows(self, identity: str) -> bool:
        return _norm(identity) in {_norm(a) for a in self.approvers}


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


def ledger_view(events: Iterable[LedgerEvent]) -> dict[str, tuple[str, int]]:
    """Tag -> (value, seq of the event that set it), overlaying the events of one version in seq order."""
    view: dict[str, tuple[str, int]] = {}
    for e in events:
        tags = e.extra.get("tags")
        if isinstance(tags, dict):
            view.update({k: (str(v), e.seq) for k, v in tags.items()})
        elif e.action in _STATUS_OF:
            view[Tag.APPROVAL_STATUS] = (str(_STATUS_OF[e.action]), e.seq)
    return view


def ledger_tags(events: Iterable[LedgerEvent]) -> dict[str, str]:
    """The tags a version must carry according to its ledger events."""
    return {k: v for k, (v, _) in ledger_view(events).items()}


def expected_champion(model_events: Iterable[LedgerEvent]) -> str | None:
    """The version alias ``champion`` must point to: the last approved one, unless revoked or rejected since."""
    champion = None
    for e in model_events:
        if e.action in APPROVING:
            champion = e.version
        elif e.action in ("revoked", "rejected") and e.version == champion:
            champion = None
    return champion


def disagreements(model: str, version: str, tags: dict[str, str], model_events: list[LedgerEvent],
                  champion: str | None) -> list[str]:
    """Where MLflow (``tags`` of the version, alias ``champion``) disagrees with the ledger; [] when consistent."""
    own = [e for e in model_events if e.version == version]
    if not own:
        return [f"{model} v{version} has no ledger events (registered outside adaptrail, or another ledger)"]
    out = []
    for key, (want, seq) in sorted(ledger_view(own).items()):
        have = tags.get(key)
        if have != want:
            out.append(f"tag {key} is {have!r} in MLflow but {want!r} in the ledger (seq {seq})")
    view = ledger_tags(own)
    for key in LEDGER_ONLY_TAGS:
        if key in tags and key not in view:
            out.append(f"tag {key} is set in MLflow but the ledger never recorded it")
    should = expected_champion(model_events)
    if should == version and champion != version:
        out.append(f"alias {ALIAS_CHAMPION} points to {_v(champion)} but the ledger's last approval makes "
                   f"v{version} champion")
    elif champion == version and should != version:
        out.append(f"alias {ALIAS_CHAMPION} points to v{version} but the ledger says the champion is {_v(should)}")
    return out


def tag_ledger_disagreements(model: str, version: str | int) -> list[str]:
    """Where the version's MLflow tags (and the champion alias) disagree with the ledger; the audit reads this."""
    c, version = registry.client(), str(version)
    mv = model_version(c, model, version)
    with Ledger() as led:
        events = led.events(model=model)
    return disagreements(model, version, mv.tags, events, _champion(c, model))


def reconcile(model: str, version: str | int) -> list[str]:
    """Make the version's tags and the champion alias agree with the ledger; returns what was repaired."""
    with Ledger() as led:
        return _reconcile(registry.client(), led, model, str(version))


# --- decisions ------------------------------------------------------------------------------------------


def approve(model: str, version: str | int, actor: str, reason: str, *, override: bool = False,
            second_approver: str | None = None, now: datetime | None = None, policy: Policy | None = None
            ) -> Decision:
    """Approve a version and make it champion (rules: allow-list, separation of duties, override for failed gates)."""
    policy, now, version = policy or Policy.resolve(), utc_now(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        _require_reason(reason)
        _require_approver(actor, policy)
        _require_not_requester(s, actor, "approve")
        if s.status == ApprovalStatus.REVOKED:
            raise DecisionRefused("revoked", f"{model} v{version} was revoked; it cannot be approved again. Train "
                                  "and register a new version")
        if s.status == ApprovalStatus.APPROVED and s.champion == version and not is_overdue(s.view, now):
            return s.unchanged("approved", "already approved and champion; nothing recorded")
        failed = _check_override(s, policy, actor, override, second_approver)
        approvers = [actor, second_approver] if failed else [actor]
        tags = _state(ApprovalStatus.APPROVED, ", ".join(approvers), now, reason, _due(now, policy))
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
    policy, now, version = policy or Policy.resolve(), utc_now(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        _require_reason(reason)
        _require_approver(actor, policy)
        if s.status in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED, ApprovalStatus.REVOKED):
            raise DecisionRefused("use-revoke", f"{model} v{version} is {s.status}; an approval is withdrawn with "
                                  f"`adaptrail revoke {model} {version} --reason ...`")
        if s.last_decision == "rejected":
            return s.unchanged("rejected", "already rejected; nothing recorded")
        tags = _state(ApprovalStatus.REJECTED, actor, now, reason, s.view.get(Tag.REVIEW_DUE, ""))
        event = _record(s, "rejected", actor, reason, tags, now, policy)
        _drop_alias(s, ALIAS_CANDIDATE)
        return s.changed(event, s.champion, "rejected")


def revoke(model: str, version: str | int, actor: str, reason: str, *, now: datetime | None = None,
           policy: Policy | None = None) -> Decision:
    """Withdraw an approval; removes alias champion from this version and names (never sets) a successor."""
    policy, now, version = policy or Policy.resolve(), utc_now(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        _require_reason(reason)
        _require_approver(actor, policy)
        if s.status == ApprovalStatus.REVOKED:
            return s.unchanged("revoked", "already revoked; nothing recorded")
        if s.status not in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED):
            raise DecisionRefused("not-approved", f"{model} v{version} is {s.status}, not approved; nothing to "
                                  f"revoke (use `adaptrail reject`)")
        tags = _state(ApprovalStatus.REVOKED, actor, now, reason, s.view.get(Tag.REVIEW_DUE, ""))
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
    policy, now, version = policy or Policy.resolve(), utc_now(now), str(version)
    with Ledger() as led:
        s = _prepare(led, model, version, now)
        _require_reason(reason)
        _require_approver(actor, policy)
        _require_not_requester(s, actor, "review")
        if s.status not in (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED):
            raise DecisionRefused("not-approved", f"{model} v{version} is {s.status}; only approved or expired "
                                  "versions are reviewed (use `adaptrail approve`)")
        failed = _check_override(s, policy, actor, override, second_approver)
        approvers = [actor, second_approver] if failed else [actor]
        tags = _state(ApprovalStatus.APPROVED, ", ".join(approvers), now, reason, _due(now, policy))
        event = _record(s, "reviewed", actor, reason, tags, now, policy, approvers=approvers, failed_gates=failed)
        return s.changed(event, s.champion, f"reviewed; review due {tags[Tag.REVIEW_DUE]}")


def expire_overdue(model: str | None = None, now: datetime | None = None) -> list[Decision]:
    """Mark approved versions whose ``review.due`` has passed as ``expired`` (ledger event ``expired``)."""
    now = utc_now(now)
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
            tags = _state(ApprovalStatus.EXPIRED, ACTOR_EXPIRY, now, reason, due)
            event = _record(s, "expired", ACTOR_EXPIRY, reason, tags, now, None)
            out.append(s.changed(event, s.champion, f"expired: {reason}; re-review with `adaptrail review {m} {v}`"))
    return out


def record_registration(model: str, version: str | int, status: str, gates: dict[str, str], evidence: dict,
                        actor: str, *, now: datetime | None = None) -> list[LedgerEvent]:
    """Ledger events ``registered`` (+ ``gate_failed`` per failed gate) for a new version; idempotent per version.

    The register step calls it after creating the version; the event records the version's tags (gates, digests,
    requester, approval state) so later hand edits of them are detected. Returns the events written now.
    """
    version, now = str(version), utc_now(now)
    if status not in (ApprovalStatus.PENDING, ApprovalStatus.REJECTED):
        raise InputError(f"a new version is registered as pending or rejected, not {status!r}")
    bad = {g: o for g, o in gates.items() if g not in GATES or o not in set(GateOutcome)}
    if bad:
        raise InputError(f"gates {bad} are not gate -> outcome; use gates {GATES} and outcomes "
                         f"{[str(o) for o in GateOutcome]}")
    c = registry.client()
    mv = model_version(c, model, version)
    with Ledger() as led:
        existing = led.events(model=model, version=version)
        written = []
        if not any(e.action == "registered" for e in existing):
            tags = _registration_tags(mv.tags, status, gates, actor, now)
            written.append(led.append(model, version, "registered", actor, tags[Tag.APPROVAL_REASON],
                                      evidence_digest(evidence), {"tags": tags, "gates": dict(gates)}, at=now))
        recorded = {e.extra.get("gate") for e in existing if e.action == "gate_failed"}
        for gate, outcome in gates.items():
            if outcome == GateOutcome.FAILED and gate not in recorded:
                written.append(led.append(model, version, "gate_failed", actor, f"gate {gate} failed",
                                          evidence_digest(evidence), {"gate": gate}, at=now))
        want = ledger_tags(led.events(model=model, version=version))
    for key, value in want.items():
        if mv.tags.get(key) != value:
            c.set_model_version_tag(model, version, key, value)
    return written


def is_overdue(tags: dict[str, str], now: datetime) -> bool:
    """Approved, and today (UTC) is after ``review.due``; an unreadable due date counts as overdue."""
    if tags.get(Tag.APPROVAL_STATUS) != ApprovalStatus.APPROVED:
        return False
    try:
        return now.astimezone(timezone.utc).date() > date.fromisoformat(tags.get(Tag.REVIEW_DUE, ""))
    except ValueError:
        return True


def approved_versions(model: str, now: datetime | None = None) -> list[str]:
    """Versions the ledger says are approved and in date, most recently approved first."""
    now = utc_now(now)
    with Ledger() as led:
        return _approved_in_date(led.events(model=model), now)


# --- plumbing -------------------------------------------------------------------------------------------


@dataclass
class _Subject:
    """One version as a decision sees it, after reconciling MLflow with the ledger."""

    c: MlflowClient
    led: Ledger
    model: str
    version: str
    tags: dict[str, str]
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
                   (not e.extra.get("tags") and e.action in _STATUS_OF)]
        return setters[-1].action if setters else None

    def unchanged(self, action: str, message: str) -> Decision:
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
    """Load the version, backfill its registration if the ledger has none, and repair tags from the ledger."""
    c = registry.client()
    mv = model_version(c, model, version)
    if not led.events(model=model, version=version):
        _backfill(mv, now)
    repaired = _reconcile(c, led, model, version)
    mv = c.get_model_version(model, version)
    events = led.events(model=model, version=version)
    return _Subject(c, led, model, version, dict(mv.tags), events, _champion(c, model), repaired, now)


def _backfill(mv, now: datetime) -> None:
    """A version registered before the ledger: record it from its tags, never as approved."""
    gates = {g: mv.tags.get(Tag.gate(g), GateOutcome.SKIPPED) for g in GATES}
    gates = {g: o if o in set(GateOutcome) else GateOutcome.SKIPPED for g, o in gates.items()}
    status = ApprovalStatus.REJECTED if GateOutcome.FAILED in gates.values() else ApprovalStatus.PENDING
    log.warning("%s v%s has no ledger events; recording its registration from its MLflow tags", mv.name, mv.version)
    record_registration(mv.name, str(mv.version), status, gates, {"backfilled_from_tags": dict(mv.tags)},
                        ACTOR_BACKFILL, now=now)


def _registration_tags(tags: dict[str, str], status: str, gates: dict[str, str], actor: str, now: datetime
                       ) -> dict[str, str]:
    """What the ``registered`` event records: the version's facts and its initial approval state."""
    facts = {k: tags[k] for k in FACT_TAGS if k in tags} | {Tag.gate(g): str(o) for g, o in gates.items()}
    if tags.get(Tag.APPROVAL_STATUS) == status and tags.get(Tag.APPROVAL_AT):
        state = {k: tags.get(k, "") for k in STATE_TAGS}
    else:
        state = _state(status, actor, now, f"registered as {status}", tags.get(Tag.REVIEW_DUE, ""))
    return facts | state


def _reconcile(c: MlflowClient, led: Ledger, model: str, version: str) -> list[str]:
    mv = model_version(c, model, version)
    model_events = led.events(model=model)
    own = [e for e in model_events if e.version == version]
    if not own:
        return []
    champion = _champion(c, model)
    problems = disagreements(model, version, mv.tags, model_events, champion)
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
    if should == version and champion != version:
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
    """Ledger first, then the MLflow tags (a crash in between is repaired by the next call's reconcile)."""
    facts = {k: v for k, v in s.view.items() if k in FACT_TAGS}
    meta = {"tags": tags, "previous_status": s.status, "invoked_by": _os_user(), **extra}
    if policy is not None:
        meta["allow_list"] = policy.source
    event = s.led.append(s.model, s.version, action, actor, reason, evidence_digest(facts), meta, at=now)
    _mirror(s.c, s.model, s.version, tags)
    return event


def _mirror(c: MlflowClient, model: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(model, version, key, value)


def _state(status: str, by: str, now: datetime, reason: str, due: str) -> dict[str, str]:
    return {Tag.APPROVAL_STATUS: str(status), Tag.APPROVAL_BY: by,
            Tag.APPROVAL_AT: now.astimezone(timezone.utc).isoformat(timespec="seconds"),
            Tag.APPROVAL_REASON: reason.strip(), Tag.REVIEW_DUE: due}


def _due(now: datetime, policy: Policy) -> str:
    return (now.astimezone(timezone.utc) + timedelta(days=policy.review_period_days)).date().isoformat()


def _sign(s: _Subject, private_key: str) -> dict[str, str]:
    """Sign the stored manifest, after checking it is the one whose digest the ledger recorded."""
    from tasks.loader import fetch_manifest
    from tasks.signing import sign_manifest

    manifest_bytes, digest = fetch_manifest(s.c.get_model_version(s.model, s.version).source)
    if digest != s.view.get(Tag.ADAPTER_DIGEST):
        raise DecisionRefused("adapter-digest", f"the stored manifest's digest {digest[:16]}... is not the "
                              f"registered adapter.digest {s.view.get(Tag.ADAPTER_DIGEST, '')[:16]}...; not signing")
    return sign_manifest(manifest_bytes, private_key)


def _check_override(s: _Subject, policy: Policy, actor: str, override: bool, second: str | None) -> list[str]:
    """[] when the gates passed; the failed gates when a valid override allows approving anyway."""
    failed = _failed_gates(s)
    if not failed:
        return []
    if not override:
        raise DecisionRefused("override", f"gates failed for {s.model} v{s.version} ({', '.join(failed)}); approving "
                              "needs --override, a reason and --second-approver ID (a second, distinct approver)")
    if not second or not second.strip():
        raise DecisionRefused("second-approver", "an override needs a second approver: --second-approver ID")
    if _norm(second) == _norm(actor):
        raise DecisionRefused("second-approver", f"the second approver must differ from the first ({actor!r})")
    _require_approver(second, policy)
    _require_not_requester(s, second, "confirm an override of")
    return failed


def _failed_gates(s: _Subject) -> list[str]:
    """Gates that failed per the ledger: gate tags recorded at registration, gate_failed events, a gate rejection."""
    view = s.view
    failed = {g for g in GATES if view.get(Tag.gate(g)) == GateOutcome.FAILED}
    failed |= {str(e.extra.get("gate", "?")) for e in s.events if e.action == "gate_failed"}
    registered = [e for e in s.events if e.action == "registered"]
    if registered and (registered[0].extra.get("tags") or {}).get(Tag.APPROVAL_STATUS) == ApprovalStatus.REJECTED:
        failed = failed or {"registration"}
    return sorted(failed)


def _require_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise DecisionRefused("reason", "give a reason (--reason TEXT); the ledger records why")


def _require_approver(identity: str, policy: Policy) -> None:
    if not isinstance(identity, str) or not identity.strip():
        raise DecisionRefused("identity", "no identity given; set ADAPTRAIL_USER or pass --as ID")
    if not policy.approvers:
        raise DecisionRefused("allow-list", f"no approvers are configured; set {ENV_APPROVERS}=alice,bob (or "
                              "approval.approvers in the config)")
    if not policy.allows(identity):
        raise DecisionRefused("allow-list", f"{identity!r} is not on the approver allow-list ({policy.source}: "
                              f"{', '.join(policy.approvers)})")


def _require_not_requester(s: _Subject, identity: str, what: str) -> None:
    requester = s.view.get(Tag.REQUESTED_BY, "")
    if not requester:
        raise DecisionRefused("separation-of-duties", f"{s.model} v{s.version} records no {Tag.REQUESTED_BY}, so "
                              "separation of duties cannot be checked; register it through the train_adapter flow")
    if _norm(identity) == _norm(requester):
        raise DecisionRefused("separation-of-duties", f"{identity!r} requested the training run of {s.model} "
                              f"v{s.version} and may not {what} it; ask another approver")


def _approved_in_date(model_events: list[LedgerEvent], now: datetime) -> list[str]:
    by_version: dict[str, list[LedgerEvent]] = {}
    for e in model_events:
        by_version.setdefault(e.version, []).append(e)
    ok = []
    for version, events in by_version.items():
        view = ledger_tags(events)
        if view.get(Tag.APPROVAL_STATUS) == ApprovalStatus.APPROVED and not is_overdue(view, now):
            last = max((e.seq for e in events if e.action in (*APPROVING, "reviewed")), default=events[-1].seq)
            ok.append((last, version))
    return [v for _, v in sorted(ok, reverse=True)]


def _successor(led: Ledger, model: str, exclude: str, now: datetime) -> str | None:
    return next((v for v in _approved_in_date(led.events(model=model), now) if v != exclude), None)


def _drop_alias(s: _Subject, alias: str) -> None:
    current = registry.version_by_alias(s.c, s.model, alias)
    if current is not None and str(current.version) == s.version:
        s.c.delete_registered_model_alias(s.model, alias)


def _champion(c: MlflowClient, model: str) -> str | None:
    mv = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    return str(mv.version) if mv is not None else None


def model_version(c: MlflowClient, model: str, version: str):
    """The registered version, or an InputError naming what is missing."""
    if not isinstance(model, str) or not model.strip():
        raise InputError("give the registered model name, e.g. support-ticket-router")
    if not str(version).isdigit():
        raise InputError(f"version must be a number (got {version!r}), e.g. 3")
    try:
        return c.get_model_version(model, str(version))
    except MlflowException as err:
        if registry.is_transient(err):  # the server is unreachable: not a missing version, and worth a retry
            raise
        raise InputError(f"{model} v{version} is not in the MLflow registry at {state.tracking_uri()}; "
                         "list versions in the MLflow UI (Models)") from None


def utc_now(now: datetime | None = None) -> datetime:
    """``now`` (must be timezone-aware), or the current UTC time."""
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise InputError("now must be timezone-aware (UTC)")
    return now


def _env_days() -> int:
    raw = os.environ.get(ENV_REVIEW_PERIOD_DAYS, "").strip()
    if not raw:
        return DEFAULT_REVIEW_PERIOD_DAYS
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"{ENV_REVIEW_PERIOD_DAYS}={raw!r} must be a whole number of days >= 1, e.g. 182")
    return int(raw)


def _norm(identity: str) -> str:
    return identity.strip().casefold()


def _v(version: str | None) -> str:
    return f"v{version}" if version else "nothing"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return f"uid-{os.getuid()}"
