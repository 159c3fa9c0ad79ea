"""Review flow: show a version's evidence in a Prefect pause form, record the signed decision exactly as the CLI does.

Evidence (gates, metrics vs champion, lineage, ledger) -> pause: decision, your name, reason -> the rules are checked
and the statement to sign is shown with the one command that signs it -> pause: the signature -> recorded only if it
is a valid signature of that statement by a key the policy gives that person (``tasks.governance.approvals``).
No answer within the timeout leaves the version as it was (``pending``); the pause then ends the run as Failed
("paused and never resumed"), which is why the main flow runs this as a subflow (:func:`request_approval`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from tasks.governance import approvals
from tasks.governance import registry
from tasks.core.config import ApprovalConfig
from tasks.governance.evidence import evidence_markdown
from tasks.core.names import Tag

log = logging.getLogger("adaptrail")



class ApprovalInput(RunInput):
    """The reviewer's answer; the same rules as ``adaptrail approve|reject`` apply."""

    decision: Literal["approve", "reject"] = Field(description="approve (moves alias champion) or reject")
    approver: str = Field(description="your name in the policy (`adaptrail policy show`); you sign next")
    reason: str = Field(description="why; recorded in the approval ledger")
    override: bool = Field(False, description="approve although a gate failed (a second approver confirms)")


class SignatureInput(RunInput):
    """The signature of the statement shown above, by the approver's own key."""

    signature: str = Field(description="the line `adaptrail sign` printed (or ssh-keygen's armored signature)")


# --- steps -----------------------------------------------------------------------------------------------

step = task(cache_policy=NO_CACHE, retries=0)  # decisions are never retried


@step(name="show-evidence")
def show_evidence(model: str, version: str) -> str:
    markdown = evidence_markdown(model, version)
    create_markdown_artifact(markdown, key="review-evidence", description=f"{model} v{version}")
    return markdown


def wait_for(form: type[RunInput], description: str, timeout_seconds: int, poll_interval_seconds: int
             ) -> RunInput | None:
    """Pause this flow run with the form; None when nobody answered in time."""
    poll = max(1, min(poll_interval_seconds, timeout_seconds // 2))  # a short timeout is not overslept
    try:
        return pause_flow_run(wait_for_input=form.with_initial_data(description=description), timeout=timeout_seconds,
                              poll_interval=poll)
    except FlowPauseTimeout:
        return None


@step(name="check-rules")
def check_rules(model: str, version: str, answer: ApprovalInput) -> approvals.Plan | dict[str, Any]:
    """The rules for this answer (refused: this step fails naming the rule); the plan whose statement is signed."""
    kind = "approve" if answer.decision == "approve" else "reject"
    planned = approvals.plan(kind, model, version, answer.approver, answer.reason, override=answer.override)
    return planned.to_dict() if isinstance(planned, approvals.Decision) else planned


def signing_request(plan: approvals.Plan) -> str:
    """What the second form shows: the statement (readable, and as the base64 line that is signed) and the command."""
    b64 = plan.draft.statement_b64
    text = json.dumps(json.loads(plan.statement), indent=2)
    markdown = (f"## Sign your decision\n\nYou are signing this statement:\n\n```json\n{text}\n```\n\n"
                f"Sign it with your own key and paste the printed line below:\n\n"
                f"```\nadaptrail sign --key ~/.ssh/id_ed25519 {b64}\n```\n\n"
                f"(ssh-agent or a passphrase: `echo {b64} | base64 -d | ssh-keygen -Y sign -n adaptrail -f "
                f"~/.ssh/id_ed25519` and paste the whole armored signature.)")
    create_markdown_artifact(markdown, key="review-statement", description="the statement to sign")
    return markdown


@step(name="record-decision")
def record_decision(plan: approvals.Plan, signature: str) -> dict[str, Any]:
    """Recorded only with a valid signature by the approver's key; otherwise this step fails and nothing changes."""
    decision = approvals.execute(plan, signature)
    print(f"{plan.subject.model} v{plan.subject.version}: {decision.message}")
    return decision.to_dict()


def _no_decision(model: str, version: str, why: str) -> dict[str, Any]:
    status = registry.model_version(registry.client(), model, version).tags.get(Tag.APPROVAL_STATUS, "")
    return {"model": model, "version": version, "action": None, "status": status, "changed": False,
            "message": f"{why}; {model} v{version} stays {status} (decide later: review_adapter flow or CLI)"}


# --- flows -----------------------------------------------------------------------------------------------


@flow(name="review_adapter", log_prints=True)
def review_adapter(model: str, version: str, timeout_seconds: int = 3600, poll_interval_seconds: int = 10
                   ) -> dict[str, Any]:
    """Show a registered version's evidence, take a decision and its signature, record it in ledger and MLflow.

    Who may decide is the signed policy's alone: a flow parameter cannot add an approver.
    """
    evidence = show_evidence(model, str(version))
    answer = wait_for(ApprovalInput, evidence, timeout_seconds, poll_interval_seconds)
    if answer is None:
        return _no_decision(model, str(version), f"no decision within {timeout_seconds} s")
    planned = check_rules(model, str(version), answer)
    if isinstance(planned, dict):
        return planned  # already in effect
    signed = wait_for(SignatureInput, signing_request(planned), timeout_seconds, poll_interval_seconds)
    if signed is None:
        return _no_decision(model, str(version), f"no signature within {timeout_seconds} s")
    return record_decision(planned, signed.signature)


def request_approval(model: str, version: str, approval: ApprovalConfig) -> dict[str, Any]:
    """The main flow's optional approval step: ``review_adapter`` as a subflow; never fails the calling flow."""
    state = review_adapter(model, str(version), timeout_seconds=approval.timeout_seconds, return_state=True)
    if state.is_completed():
        return state.result()
    return _no_decision(model, str(version), f"approval step ended {state.type.value.lower()}: {state.message}")
