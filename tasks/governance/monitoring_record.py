"""What the ledger says about monitoring a version: its history, a breach still awaiting review, what loading does
about it, and the audit's findings. Pure functions of counted ledger events (``monitored`` / ``review_required``,
signed by the pipeline's service key; only a ``reviewed`` decision by an approver clears a breach)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tasks.governance.ledger import LedgerEvent
from tasks.governance.policy import MonitoringPolicy, Policy

MONITORING_ACTIONS = ("monitored", "review_required")
#: Outcomes of a monitoring run.
PASS, BREACH, INSUFFICIENT = "pass", "breach", "insufficient_data"


def result_of(e: LedgerEvent) -> dict[str, Any]:
    """One monitoring event as the audit and the card list it (defensive: a reader never crashes on it)."""
    m = e.extra.get("monitoring") if isinstance(e.extra.get("monitoring"), dict) else {}
    breaches = m.get("breaches") if isinstance(m.get("breaches"), list) else []
    return {"seq": e.seq, "at": e.at, "action": e.action, "outcome": str(m.get("outcome", "?")),
            "run_id": str(m.get("run_id", "")), "rows": m.get("rows"), "labelled": bool(m.get("labelled")),
            "breaches": [str(b) for b in breaches], "data": str(m.get("data", "")),
            "on_review_required": str(m.get("on_review_required", "warn"))}


def history(own: Sequence[LedgerEvent]) -> list[dict[str, Any]]:
    """Every monitoring result of the version, oldest first; ``open``: the breach no review has answered yet."""
    pending = open_review(own)
    return [result_of(e) | {"open": pending is not None and e.seq == pending.seq} for e in own
            if e.action in MONITORING_ACTIONS]


def open_review(own: Sequence[LedgerEvent]) -> LedgerEvent | None:
    """The ``review_required`` event that no later ``reviewed`` (or ``revoked``) decision has answered."""
    pending = None
    for e in own:
        if e.action == "review_required":
            pending = e
        elif e.action in ("reviewed", "revoked") and pending is not None:
            pending = None
    return pending


def review_mode(own: Sequence[LedgerEvent], policy: Policy | None) -> str:
    """refuse or warn: the stricter of the policy in force and what the breach recorded (its effective settings)."""
    recorded = open_review(own)
    modes = {policy.monitoring.on_review_required if policy is not None else "warn"}
    if recorded is not None:
        modes.add(result_of(recorded)["on_review_required"])
    return "refuse" if "refuse" in modes else "warn"


def review_required_verdict(model: str, version: str, own: Sequence[LedgerEvent], policy: Policy | None,
                            purpose: str) -> tuple[bool, str]:
    """(may load, why) for a version in ``review_required``: loading for monitoring always may; loading for use
    warns, or is refused when the policy (or the breach's recorded settings) says refuse."""
    e = open_review(own)
    r = result_of(e) if e is not None else {"seq": "?", "at": "?", "breaches": [], "run_id": ""}
    what = (f"review required: monitoring found {', '.join(r['breaches']) or 'a breach'} at {r['at']} (ledger seq "
            f"{r['seq']}, monitoring run {r['run_id'] or '?'}); a person reviews it with `adaptrail review {model} "
            f"{version} --reason ...`")
    if purpose == "monitor":
        return True, what + " (loaded to monitor it)"
    if review_mode(own, policy) == "refuse":
        return False, what + "; the policy refuses loading until then"
    return True, what + "; the policy warns (monitoring.on_review_required: warn)"


def findings(model: str, version: str, monitoring: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    """The audit's findings (severity, code, model, version, message) from :func:`history`: a breach no person has
    reviewed yet."""
    r = next((h for h in monitoring if h.get("open")), None)
    if r is None:
        return []
    return [("high", "monitoring-review-required", model, version,
             f"monitoring found {', '.join(r['breaches']) or 'a breach'} on {r['rows']} new texts at {r['at']} "
             f"(ledger seq {r['seq']}, MLflow run {r['run_id'] or '?'}) and no review has answered it; "
             f"`adaptrail review {model} {version} --reason ...` after looking at the monitoring report")]


def effective_thresholds(policy: Policy | None, requested: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """The thresholds a monitoring run judges by: the signed policy's ``monitoring:``, tightened (never loosened) by
    the version's recorded training config ``monitoring:`` section. Returns them and a note per requested value that
    was ignored because it was looser."""
    base = (policy.monitoring if policy is not None else MonitoringPolicy()).model_dump()
    out, notes = dict(base), []
    for key, value in (requested or {}).items():
        if value is None or key not in base:
            continue
        if key == "on_review_required":
            out[key] = "refuse" if "refuse" in (value, base[key]) else "warn"
        elif float(value) <= float(base[key]):
            out[key] = float(value)
        else:
            notes.append(f"the training config's monitoring.{key}={value} is looser than the policy's {base[key]}: "
                         "the policy's applies")
    return out, notes
