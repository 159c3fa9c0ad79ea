"""The ledger's view of versions: which tags and champion the ledger implies, and where MLflow disagrees with it.

The ledger is the record and MLflow tags mirror it. Each event stores in ``extra["tags"]`` the tags it sets, so the
tags a version must carry are the overlay of its events in seq order (:func:`ledger_tags`), and the ``champion``
alias follows from the model's approvals and revocations (:func:`expected_champion`). Pure functions of events.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from tasks.core.errors import InputError
from tasks.core.names import ALIAS_CHAMPION, TAG_PREFIX, ApprovalStatus, Tag
from tasks.governance.ledger import MAX_CLOCK_SKEW, LedgerEvent

#: The approval state a decision sets; mirrored from the ledger.
STATE_TAGS = (Tag.APPROVAL_STATUS, Tag.APPROVAL_BY, Tag.APPROVAL_AT, Tag.APPROVAL_REASON, Tag.REVIEW_DUE)
#: What was registered; recorded once in the ``registered`` event, so a hand edit of these is detected too.
FACT_TAGS = (Tag.GATE_VALIDATION, Tag.GATE_BIAS, Tag.GATE_REGRESSION, Tag.DATASET_DIGEST, Tag.BASE_MODEL,
             Tag.BASE_MODEL_REVISION, Tag.BASE_MODEL_DIGEST, Tag.REQUESTED_BY, Tag.ADAPTER_DIGEST, Tag.CODE_VERSION,
             Tag.FLOW_RUN_ID, Tag.PEFT_METHOD, Tag.PEFT_TRAINABLE_PARAMS, Tag.PEFT_TRAINABLE_FRACTION)
#: Present only when the ledger says so (the manifest-signature tags of earlier releases: set by hand, a disagreement).
LEDGER_ONLY_TAGS = (TAG_PREFIX + "adapter.signature", TAG_PREFIX + "adapter.signature.key")

APPROVING = ("approved", "overridden")
# Status implied by an event written without extra["tags"] (not by this module).
STATUS_OF = {"approved": ApprovalStatus.APPROVED, "overridden": ApprovalStatus.APPROVED,
              "reviewed": ApprovalStatus.APPROVED, "rejected": ApprovalStatus.REJECTED,
              "gate_failed": ApprovalStatus.REJECTED, "expired": ApprovalStatus.EXPIRED,
              "revoked": ApprovalStatus.REVOKED, "review_required": ApprovalStatus.REVIEW_REQUIRED}


def ledger_view(events: Iterable[LedgerEvent]) -> dict[str, tuple[str, int]]:
    """Tag -> (value, seq of the event that set it), overlaying the events of one version in seq order."""
    view: dict[str, tuple[str, int]] = {}
    for e in events:
        tags = e.extra.get("tags")
        if isinstance(tags, dict):
            view.update({k: (str(v), e.seq) for k, v in tags.items()})
        elif e.action in STATUS_OF:
            view[Tag.APPROVAL_STATUS] = (str(STATUS_OF[e.action]), e.seq)
    return view


def ledger_tags(events: Iterable[LedgerEvent]) -> dict[str, str]:
    """The tags a version must carry according to its ledger events."""
    return {k: v for k, (v, _) in ledger_view(events).items()}


def expected_champion(model_events: Iterable[LedgerEvent]) -> str | None:
    """The version alias ``champion`` must point to: the last approved one, unless revoked or rejected since."""
    champion = None
    for e in model_events:
        if e.action in APPROVING and not e.extra.get("awaiting_second"):
            champion = e.version
        elif e.action in ("revoked", "rejected") and e.version == champion:
            champion = None
    return champion


def identity_of(mv: Any) -> dict[str, Any]:
    """What makes a registered version this one and not a re-created one with the same number: its MLflow run and
    creation time (recorded in the ``registered`` event)."""
    return {"run_id": str(getattr(mv, "run_id", "") or ""),
            "created_ms": int(getattr(mv, "creation_timestamp", 0) or 0)}


def identity_problem(model: str, version: str, own: list[LedgerEvent], identity: dict[str, Any] | None) -> str:
    """'' when the ledger's ``registered`` event names this very version (or records no identity: older events)."""
    registered = next((e for e in own if e.action == "registered"), None)
    recorded = registered.extra.get("identity") if registered is not None else None
    if not recorded or identity is None or recorded == identity:
        return ""
    return (f"{model} v{version} is not the version the ledger registered: the ledger's v{version} came from run "
            f"{recorded.get('run_id')} created at {recorded.get('created_ms')} ms, MLflow's from run "
            f"{identity['run_id']} created at {identity['created_ms']} ms (deleted and re-created?)")


def disagreements(model: str, version: str, tags: dict[str, str], model_events: list[LedgerEvent],
                  champion: str | None, identity: dict[str, Any] | None = None) -> list[str]:
    """Where MLflow (``tags`` of the version, alias ``champion``, the version's ``identity``) disagrees with the
    ledger; [] when consistent."""
    own = [e for e in model_events if e.version == version]
    if not own:
        return [f"{model} v{version} has no ledger events (registered outside adaptrail, or another ledger)"]
    if not any(e.action == "registered" for e in own):
        return [f"{model} v{version} has no `registered` event: the register step never recorded it"]
    other = identity_problem(model, version, own, identity)
    if other:
        return [other]
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


def is_overdue(tags: dict[str, str], now: datetime) -> bool:
    """Approved (or sent back for review by monitoring), and today (UTC) is after ``review.due``; an unreadable due
    date counts as overdue."""
    if tags.get(Tag.APPROVAL_STATUS) not in (ApprovalStatus.APPROVED, ApprovalStatus.REVIEW_REQUIRED):
        return False
    try:
        return now.astimezone(timezone.utc).date() > date.fromisoformat(tags.get(Tag.REVIEW_DUE, ""))
    except ValueError:
        return True


def approved_in_date(model_events: list[LedgerEvent], now: datetime) -> list[str]:
    by_version: dict[str, list[LedgerEvent]] = {}
    for e in model_events:
        by_version.setdefault(e.version, []).append(e)
    ok = []
    for version, events in by_version.items():
        view = ledger_tags(events)
        if view.get(Tag.APPROVAL_STATUS) == ApprovalStatus.APPROVED and not is_overdue(view, now):
            last = max((e.seq for e in events if e.action in (*APPROVING, "reviewed")
                        and not e.extra.get("awaiting_second")), default=events[-1].seq)
            ok.append((last, version))
    return [v for _, v in sorted(ok, reverse=True)]


def state_tags(status: str, by: str, now: datetime, reason: str, due: str) -> dict[str, str]:
    """The approval-state tags a decision (or a registration) sets."""
    return {Tag.APPROVAL_STATUS: str(status), Tag.APPROVAL_BY: by,
            Tag.APPROVAL_AT: now.astimezone(timezone.utc).isoformat(timespec="seconds"),
            Tag.APPROVAL_REASON: reason.strip(), Tag.REVIEW_DUE: due}


def utc_now(now: datetime | None = None) -> datetime:
    """``now`` (must be timezone-aware), or the current UTC time."""
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise InputError("now must be timezone-aware (UTC)")
    return now


def decision_time(now: datetime | None = None) -> datetime:
    """The time of something that writes the ledger (a decision, an expiry, a registration): ``now`` or the current
    UTC time, never in the future: events are recorded when they happen (reads such as ``verify`` may ask about any
    time)."""
    now = utc_now(now)
    if now > datetime.now(timezone.utc) + MAX_CLOCK_SKEW:
        raise InputError(f"now={now.isoformat()} is in the future; a decision, expiry or audit is recorded when it "
                         "happens (or replayed for a past time), never dated ahead")
    return now


def _v(version: str | None) -> str:
    return f"v{version}" if version else "nothing"


def decision_record(e: LedgerEvent) -> dict[str, Any]:
    """One ledger event as the audit and the adapter card list it: when, what, by whom (both approvers of an
    override), why, and which failed gates it overrode."""
    approvers = e.extra.get("approvers") or [e.actor]
    return {"seq": e.seq, "at": e.at, "action": e.action, "actor": e.actor, "reason": e.reason,
            "approvers": [str(a) for a in approvers], "failed_gates": list(e.extra.get("failed_gates") or []),
            "awaiting_second": bool(e.extra.get("awaiting_second")), "confirms": e.extra.get("confirms")}
