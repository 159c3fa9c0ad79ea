"""What a ledger event must be, whoever signed it: its shape, and the decision rules, checked when the ledger is read.

The decision code (``rules.py``, ``approvals.py``) checks these before it signs; :mod:`trust` checks them again for
every signed event, because an approver can sign a statement and INSERT it around that code. So the rules hold in
the ledger itself: the status an event sets follows from its action; the requester never approves their own run;
a revoked version is never approved again; a failed gate needs two distinct approvers in two events; the review date
is within the policy's period; under ``require_signed_requests`` only signed runs are approved. Pure functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from tasks.core.names import GATES, ApprovalStatus, GateOutcome, Tag
from tasks.governance.ledger import LedgerEvent
from tasks.governance.ledger_view import STATE_TAGS, ledger_tags
from tasks.governance import keys
from tasks.governance.policy import Policy, revoked_since

AT_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
APPROVED, PENDING, REJECTED = ApprovalStatus.APPROVED, ApprovalStatus.PENDING, ApprovalStatus.REJECTED
EXPIRED, REVIEW_REQUIRED = ApprovalStatus.EXPIRED, ApprovalStatus.REVIEW_REQUIRED
#: The approval status each action may set (None: it sets none).
STATUS_OF_ACTION: dict[str, set[Any]] = {
    "registered": {PENDING, REJECTED}, "gate_failed": {None, REJECTED}, "rejected": {REJECTED},
    "revoked": {ApprovalStatus.REVOKED}, "expired": {EXPIRED}, "approved": {APPROVED},
    "reviewed": {APPROVED}, "overridden": {None}, "policy": {None}, "reproduced": {None},
    "monitored": {None}, "review_required": {REVIEW_REQUIRED},
}
#: The status a version must have before the action (None: any). A version in review_required comes back only
#: through a review (or is revoked); approving it again is not the way.
BEFORE: dict[str, set[Any] | None] = {
    "approved": {PENDING, REJECTED, APPROVED, EXPIRED},
    "overridden": {PENDING, REJECTED, APPROVED, EXPIRED, REVIEW_REQUIRED},
    "reviewed": {APPROVED, EXPIRED, REVIEW_REQUIRED}, "revoked": {APPROVED, EXPIRED, REVIEW_REQUIRED},
    "rejected": {PENDING, REJECTED}, "expired": {APPROVED, REVIEW_REQUIRED}, "registered": {None},
    "gate_failed": None, "review_required": {APPROVED}, "monitored": None,
}
#: Statements about a version that never take part in a decision (an override's two steps may have them between).
NOT_DECISIONS = ("reproduced", "monitored")
_LISTS = ("approvers", "failed_gates")


def shape_problem(e: LedgerEvent) -> str:
    """'' when the row is well formed (any event, signed or not): nothing a reader relies on can crash it."""
    if not isinstance(e.at, str) or not AT_FORMAT.match(e.at):
        return "its time is not a UTC timestamp as adaptrail writes it"
    x = e.extra
    if not isinstance(x, dict) or "_unreadable" in x:
        return "its extra column is not a JSON object"
    tags = x.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        return "its tags are not a map of text to text"
    for name in _LISTS:
        if name in x and not (isinstance(x[name], list) and all(isinstance(v, str) for v in x[name])):
            return f"its {name} is not a list of names"
    if "confirms" in x and not isinstance(x["confirms"], int):
        return "its confirms is not a ledger seq"
    for name in ("signature", "after", "gate"):
        if name in x and not isinstance(x[name], str):
            return f"its {name} is not text"
    if "monitoring" in x and not isinstance(x["monitoring"], dict):
        return "its monitoring result is not an object"
    if e.action == "policy" and not isinstance(x.get("policy"), dict):
        return "a policy event without a policy"
    request = x.get("request")
    if request is not None and (e.action != "registered" or not isinstance(request, dict) or not all(
            isinstance(request.get(k), str) for k in ("statement", "signature"))):
        return "its run request is malformed (only a registration carries one)"
    return ""


def rule_problem(own: Sequence[LedgerEvent], e: LedgerEvent, policy: Policy) -> str:
    """'' when ``e`` keeps the rules, given the version's counted events ``own`` before it and the policy in force."""
    status = (e.extra.get("tags") or {}).get(Tag.APPROVAL_STATUS)
    if status not in STATUS_OF_ACTION.get(e.action, {None}):
        return f"a `{e.action}` event may not set the status {status!r}"
    if e.action == "registered":
        return "the version is registered twice" if any(x.action == "registered" for x in own) else ""
    if not set(e.extra.get("tags") or {}) <= set(STATE_TAGS):
        return "a decision may set only the approval state, never the facts recorded at registration"
    registered = next((x for x in own if x.action == "registered"), None)
    if registered is None:
        return f"a `{e.action}` event for a version the ledger never registered"
    current = ledger_tags(own).get(Tag.APPROVAL_STATUS)
    allowed = BEFORE.get(e.action)
    if allowed is not None and current not in allowed:
        return f"a `{e.action}` event on a version that is {current} (revoked is final)"
    if e.action in ("approved", "reviewed", "overridden"):
        return _approval_problem(own, registered, e, policy)
    return ""


def _approval_problem(own: Sequence[LedgerEvent], registered: LedgerEvent, e: LedgerEvent, policy: Policy) -> str:
    requester = (registered.extra.get("tags") or {}).get(Tag.REQUESTED_BY, "")
    if requester.strip().casefold() == e.actor.strip().casefold():
        return f"{e.actor!r} approves their own run (separation of duties)"
    if policy.require_signed_requests and "request" not in registered.extra:
        return "it approves a run without a signed request, which the policy requires"
    failed = failed_gates(own)
    decisive = [x for x in own if x.action not in NOT_DECISIONS]  # e.g. a reproduction does not end an override
    first = decisive[-1] if decisive and decisive[-1].action == "overridden" and decisive[-1].extra.get(
        "awaiting_second") else None
    if e.action == "overridden":
        if not e.extra.get("awaiting_second") or (e.extra.get("tags") or {}):
            return "an override is recorded in two steps: the first awaits a second approver and sets no status"
        return "" if failed else "an override of a version whose gates passed"
    approvers = e.extra.get("approvers", [e.actor])
    if failed:
        if first is None or e.extra.get("confirms") != first.seq:
            return f"it approves despite failed gates ({', '.join(failed)}) without confirming a first override"
        if first.actor.strip().casefold() == e.actor.strip().casefold():
            return "both steps of the override are by the same person"
        if approvers != [first.actor, e.actor]:
            return "its approvers are not the two people who signed the override"
    elif "confirms" in e.extra or approvers != [e.actor]:
        return "its approvers are not the person who signed it"
    return _review_due_problem(e, policy)


def _review_due_problem(e: LedgerEvent, policy: Policy) -> str:
    try:
        due = date.fromisoformat((e.extra.get("tags") or {}).get(Tag.REVIEW_DUE, ""))
    except ValueError:
        return "its review date is not a date"
    latest = date.fromisoformat(e.at[:10]) + timedelta(days=policy.review_period_days)
    return "" if due <= latest else (f"its review date {due} lies beyond the policy's {policy.review_period_days} "
                                     f"days ({latest})")


def failed_gates(own: Sequence[LedgerEvent]) -> list[str]:
    """Gates that failed per the counted events: the registration's gate tags and gate_failed events."""
    registered = next((x for x in own if x.action == "registered"), None)
    tags = (registered.extra.get("tags") or {}) if registered else {}
    failed = {g for g in GATES if tags.get(Tag.gate(g)) == GateOutcome.FAILED}
    failed |= {str(x.extra.get("gate", "?")) for x in own if x.action == "gate_failed"}
    if tags.get(Tag.APPROVAL_STATUS) == REJECTED and not failed:
        failed = {"registration"}
    return sorted(failed)


def request_id(request: dict[str, str]) -> str:
    try:
        data = json.loads(request["statement"])
        return str(data.get("request_id")) if isinstance(data, dict) else ""
    except ValueError:
        return ""


def request_problem(policy: Policy | None, request: Any, revocations: dict[str, str] | None = None
                    ) -> tuple[str, str]:
    """(the requester, '') when ``request`` is a valid signed run request under ``policy`` (and no key revocation
    stated since), else ('', why not)."""
    try:
        statement, signature = str(request["statement"]), str(request["signature"])
        data = json.loads(statement)
        public = keys.signature_key(signature)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (KeyError, TypeError, ValueError):
        return "", "is malformed"
    holder = policy.holder(public) if policy is not None else None
    if holder is None:
        return "", f"is signed by key {keys.key_id(public)}, which is not in the policy"
    revoked = revoked_since(revocations or {}, public, str(data.get("at", ""))) or (
        holder.revoked_at if holder.revoked_at and str(data.get("at", "")) >= holder.revoked_at else None)
    if revoked:
        return "", f"is signed by key {keys.key_id(public)}, revoked at {revoked}"
    if data.get("requested_by") != holder.person:
        return "", f"names {data.get('requested_by')!r} but is signed by a key of {holder.person!r}"
    bad = keys.signature_problem(public, statement.encode("ascii"), signature)
    return (holder.person, "") if not bad else ("", f"does not verify: {bad}")
