"""Audit findings about trust: ledger events that do not count (missing, invalid or unauthorised signatures, times
going backwards), a ledger without a policy, and approvals recorded unsigned before signing began; and the ledger
heads earlier audit runs recorded in MLflow (a second store of checkpoints)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tasks.core.names import AUDIT_EXPERIMENT, RUN_TAG_AUDIT_HEAD, RUN_TAG_AUDIT_LEDGER
from tasks.governance import checkpoints, registry
from tasks.governance.ledger import format_at
from tasks.governance.trust import Trust

_PAGE = 1000


def trust_summary(t: Trust) -> dict[str, Any]:
    """What the audit keeps of the trust evaluation (plain JSON, for the report)."""
    return {"policy_digest": t.policy.digest if t.policy else "",
            "policy_seq": t.policy_event.seq if t.policy_event else None,
            "approvers": t.policy.people_with("approver") if t.policy else [],
            "admins": t.policy.people_with("admin") if t.policy else [],
            "problems": [vars(p) for p in t.problems], "unsigned": sorted(t.unsigned),
            "events": len(t.counted) + len(t.problems)}


def trust_findings(summary: dict[str, Any], versions: list[Any]) -> list[tuple[str, str, str, str, str]]:
    """(severity, code, model, version, message) for events that do not count, a missing policy, unsigned approvals."""
    out = []
    if not summary.get("policy_digest") and summary.get("events"):
        out.append(("high", "no-policy", "", "", "the ledger holds no policy: decisions are not signed, so identities "
                    "are claims; an admin runs `adaptrail init` or `adaptrail policy apply POLICY.yaml --key KEY`"))
    for p in summary.get("problems", []):
        out.append(("critical", "unsigned-event", p["model"], p["version"], f"ledger seq {p['seq']} ({p['action']}) "
                    f"does not count: {p['text']}"))
    unsigned = set(summary.get("unsigned", []))
    for r in versions:
        approving = [d for d in r.decisions if d["action"] in ("approved", "overridden", "reviewed")
                     and not d.get("awaiting_second")]
        if r.status == "approved" and approving and approving[-1]["seq"] in unsigned:
            out.append(("high", "unsigned-approval", r.model, r.version, f"the approval in force (seq "
                        f"{approving[-1]['seq']}, by {approving[-1]['actor']}) was recorded before signing: re-review "
                        f"it with `adaptrail review {r.model} {r.version} --key KEY --reason ...`"))
        elif any(d["seq"] in unsigned for d in r.decisions):
            out.append(("low", "unsigned-history", r.model, r.version, "events recorded before signing began "
                        "(kept as they were; they are not signed)"))
    return out


def audit_checkpoints(c, ledger_id: str) -> list[checkpoints.Checkpoint]:
    """The ledger heads earlier audit runs recorded in MLflow (a second store of checkpoints)."""
    exp = registry.read("the audit experiment", lambda: c.get_experiment_by_name(AUDIT_EXPERIMENT))
    if exp is None or not ledger_id:
        return []
    runs = registry.read("earlier audit runs", lambda: c.search_runs(
        [exp.experiment_id], f"tags.`{RUN_TAG_AUDIT_LEDGER}` = '{ledger_id}'", max_results=_PAGE))
    return [checkpoints.Checkpoint(ledger_id, int(r.data.metrics["ledger_length"]), r.data.tags[RUN_TAG_AUDIT_HEAD],
                                   format_at(datetime.fromtimestamp(r.info.start_time / 1000, timezone.utc)),
                                   f"audit run {r.info.run_id}")
            for r in runs if "ledger_length" in r.data.metrics and RUN_TAG_AUDIT_HEAD in r.data.tags]
