"""Review flow: show a version's evidence in a Prefect pause form, record the decision exactly as the CLI does.

Evidence (gates, metrics vs champion, lineage, ledger) -> pause with a typed form -> ``tasks.approvals``.
No answer within the timeout leaves the version as it was (``pending``); the pause then ends the run as Failed
("paused and never resumed"), which is why the main flow runs this as a subflow (:func:`request_approval`).
"""

from __future__ import annotations

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
    approver: str = Field(description="your identity: on the approver allow-list, not the requester of the run")
    reason: str = Field(description="why; recorded in the approval ledger")
    override: bool = Field(False, description="approve although a gate failed (needs a second approver)")
    second_approver: str | None = Field(None, description="a second, distinct approver confirming an override")


# --- steps -----------------------------------------------------------------------------------------------

step = task(cache_policy=NO_CACHE, retries=0)  # decisions are never retried


@step(name="show-evidence")
def show_evidence(model: str, version: str) -> str:
    markdown = evidence_markdown(model, version)
    create_markdown_artifact(markdown, key="review-evidence", description=f"{model} v{version}")
    return markdown


def wait_for_decision(evidence: str, timeout_seconds: int, poll_interval_seconds: int) -> ApprovalInput | None:
    """Pause this flow run with the form; None when nobody answered in time."""
    form = ApprovalInput.with_initial_data(description=evidence)  # no default: the reviewer picks
    poll = max(1, min(poll_interval_seconds, timeout_seconds // 2))  # a short timeout is not overslept
    try:
        return pause_flow_run(wait_for_input=form, timeout=timeout_seconds, poll_interval=poll)
    except FlowPauseTimeout:
        return None


@step(name="record-decision")
def record_decision(model: str, version: str, answer: ApprovalInput, policy: approvals.Policy) -> dict[str, Any]:
    """The same functions the CLI calls; a refused decision fails this step with the rule it broke."""
    if answer.decision == "approve":
        decision = approvals.approve(model, version, answer.approver, answer.reason, override=answer.override,
                                     second_approver=answer.second_approver, policy=policy)
    else:
        decision = approvals.reject(model, version, answer.approver, answer.reason, policy=policy)
    print(f"{model} v{version}: {decision.message}")
    return decision.to_dict()


def _no_decision(model: str, version: str, why: str) -> dict[str, Any]:
    status = registry.model_version(registry.client(), model, version).tags.get(Tag.APPROVAL_STATUS, "")
    return {"model": model, "version": version, "action": None, "status": status, "changed": False,
            "message": f"{why}; {model} v{version} stays {status} (decide later: review_adapter flow or CLI)"}


# --- flows -----------------------------------------------------------------------------------------------


@flow(name="review_adapter", log_prints=True)
def review_adapter(model: str, version: str, timeout_seconds: int = 3600, poll_interval_seconds: int = 10,
                   approvers: list[str] | None = None, review_period_days: int | None = None,
                   signing_key: str | None = None) -> dict[str, Any]:
    """Show a registered version's evidence, wait for an approve/reject form, and record it in ledger and MLflow.

    Unset ``approvers``/``review_period_days``/``signing_key`` come from the worker's environment
    (ADAPTRAIL_APPROVERS, ...); the ledger records which allow-list was used.
    """
    policy = approvals.Policy.resolve(ApprovalConfig(approvers=approvers or [], private_key=signing_key),
                                      review_period_days)
    evidence = show_evidence(model, str(version))
    answer = wait_for_decision(evidence, timeout_seconds, poll_interval_seconds)
    if answer is None:
        return _no_decision(model, str(version), f"no decision within {timeout_seconds} s")
    return record_decision(model, str(version), answer, policy)


def request_approval(model: str, version: str, approval: ApprovalConfig, review_period_days: int) -> dict[str, Any]:
    """The main flow's optional approval step: ``review_adapter`` as a subflow; never fails the calling flow."""
    state = review_adapter(model, str(version), timeout_seconds=approval.timeout_seconds,
                           approvers=approval.approvers or None, review_period_days=review_period_days,
                           signing_key=approval.private_key, return_state=True)
    if state.is_completed():
        return state.result()
    return _no_decision(model, str(version), f"approval step ended {state.type.value.lower()}: {state.message}")
