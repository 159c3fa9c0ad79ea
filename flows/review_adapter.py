"""Review flow: show a version's evidence in a Prefect pause form, record the decision exactly as the CLI does.

Evidence (gates, metrics vs champion, lineage, ledger) -> pause with a typed form -> ``tasks.approvals``.
No answer within the timeout leaves the version as it was (``pending``); the pause then ends the run as Failed
("paused and never resumed"), which is why the main flow runs this as a subflow (:func:`request_approval`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

import mlflow.artifacts
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from tasks import approvals, registry
from tasks.config import ApprovalConfig
from tasks.ledger import Ledger
from tasks.names import ALIAS_CHAMPION, ARTIFACT_REPORTS, GATES, Tag

log = logging.getLogger("adaptrail")

METRICS = ("test_macro_f1", "test_accuracy", "validation_macro_f1", "test_exact_match", "test_perplexity")
LEDGER_ROWS = 8


class ApprovalInput(RunInput):
    """The reviewer's answer; the same rules as ``adaptrail approve|reject`` apply."""

    decision: Literal["approve", "reject"] = Field(description="approve (moves alias champion) or reject")
    approver: str = Field(description="your identity: on the approver allow-list, not the requester of the run")
    reason: str = Field(description="why; recorded in the approval ledger")
    override: bool = Field(False, description="approve although a gate failed (needs a second approver)")
    second_approver: str | None = Field(None, description="a second, distinct approver confirming an override")


# --- evidence ------------------------------------------------------------------------------------------


def _run_metrics(c, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return dict(c.get_run(run_id).data.metrics)
    except Exception:  # run deleted or unreadable: the table says n/a
        return {}


def _gate_reasons(run_id: str | None) -> dict[str, str]:
    """Each gate's reason from the run's ``reports/gates.json`` ({} when the run has none)."""
    if not run_id:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_REPORTS}/gates.json",
                                                       dst_path=tmp)
            return {d["gate"]: d.get("reason", "") for d in json.loads(Path(path).read_text(encoding="utf-8"))}
        except Exception:  # older runs have no gates.json
            return {}


def _cell(text: str, limit: int = 300) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")[:limit]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evidence_markdown(model: str, version: str) -> str:
    """What a reviewer needs in the form: gates, key metrics vs the champion, lineage, the ledger, the rules."""
    c = registry.client()
    mv = approvals.model_version(c, model, version)
    tags = mv.tags
    champion = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    with Ledger() as led:
        model_events = led.events(model=model)
    events = [e for e in model_events if e.version == str(version)]
    mine, theirs = _run_metrics(c, mv.run_id), _run_metrics(c, champion.run_id if champion else None)
    reasons = _gate_reasons(mv.run_id)
    lines = [f"## Review {model} v{version}",
             f"Status **{tags.get(Tag.APPROVAL_STATUS, '?')}** · "
             f"requested by **{tags.get(Tag.REQUESTED_BY, '?')}** · flow run `{tags.get(Tag.FLOW_RUN_ID, '?')}`", "", "### Gates", "| gate | outcome | reason |",
             "|---|---|---|"]
    lines += [f"| {g} | {_cell(tags.get(Tag.gate(g), '?'))} | {_cell(reasons.get(g, ''))} |" for g in GATES]
    ch = f"v{champion.version}" if champion else "none"
    lines += ["", f"### Metrics vs champion ({ch}; each scored on its own run's test split — the regression "
              "gate compares them on the same split)", f"| metric | v{version} | {ch} | change |", "|---|---|---|---|"]
    for m in METRICS:
        a, b = mine.get(m), theirs.get(m)
        if a is None and b is None:
            continue  # the other task type's metric
        lines.append(f"| {m} | {_fmt(a)} | {_fmt(b)} | {_fmt(a - b) if a is not None and b is not None else 'n/a'} |")
    lines += ["", "### Lineage"]
    for key in (Tag.DATASET_DIGEST, Tag.BASE_MODEL, Tag.BASE_MODEL_REVISION, Tag.BASE_MODEL_DIGEST, Tag.CODE_VERSION,
                Tag.ADAPTER_DIGEST, Tag.PEFT_METHOD, Tag.PEFT_TRAINABLE_PARAMS):
        lines.append(f"- `{key.removeprefix('adaptrail.')}`: `{tags.get(key, '?')}`")
    lines += ["", "### Ledger", "| seq | at | action | actor | reason |", "|---|---|---|---|---|"]
    lines += [f"| {e.seq} | {e.at} | {e.action} | {_cell(e.actor)} | {_cell(e.reason, 120)} |"
              for e in events[-LEDGER_ROWS:]]
    problems = approvals.disagreements(model, str(version), tags, model_events,
                                       str(champion.version) if champion else None)
    if problems:
        lines += ["", "### MLflow disagrees with the ledger (the decision repairs it from the ledger first)"]
        lines += [f"- {p}" for p in problems]
    lines += ["", "### Rules", "The approver must be on the allow-list and must not be the requester. A version "
              "whose gates failed is approved only with *override*, a reason and a second, distinct approver. "
              f"Approving moves alias `{ALIAS_CHAMPION}` to this version."]
    return "\n".join(lines)


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
    status = approvals.model_version(registry.client(), model, version).tags.get(Tag.APPROVAL_STATUS, "")
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
