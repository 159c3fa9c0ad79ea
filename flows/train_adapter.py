"""The main flow: data -> validation gate -> train adapter -> evaluate -> bias & regression gates -> register."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.review_adapter import request_approval
from tasks.core import state
from tasks.core.config import Config
from tasks.gates.decision import GateDecision
from tasks.steps.common import RunContext, close_run, open_run, pin_base_model, publish_summary, validate_data
from tasks.steps.causal_lm import CAUSAL_LM
from tasks.steps.classification import CLASSIFICATION
from tasks.steps.kinds import TaskSteps
from tasks.steps.register import build_summary, register
from tasks.training.recipe import TrainedAdapter

#: Each task kind's steps (typed tables in the kinds' step modules).
TASK_STEPS: dict[str, TaskSteps] = {"sequence_classification": CLASSIFICATION, "causal_lm": CAUSAL_LM}


def steps_for(task: str) -> TaskSteps:
    """The steps of ``model.task``: sequence_classification or causal_lm."""
    return TASK_STEPS[task]


@flow(name="train_adapter", log_prints=True)
def train_adapter_flow(config: Config, requested_by: str | None = None, request: dict[str, str] | None = None
                       ) -> dict[str, Any]:
    """Train a PEFT adapter on validated data and register it with its evidence, gates and lineage.

    ``request``: the run request signed by the requester's key (``adaptrail run --key``); without it the requester
    is the unsigned ``requested_by`` claim (default ``ADAPTRAIL_USER`` or the OS user)."""
    steps = steps_for(config.model.task)  # sequence_classification or causal_lm: their train/evaluate/gate steps
    splits = steps.load_data(config)
    base = pin_base_model(config)
    ctx = open_run(config, splits, base, requested_by or state.current_user(), request=request)
    ok = False
    try:
        validation = validate_data(ctx)
        trained = steps.train(ctx)
        evaluation, decisions, registered = gate_and_register(ctx, steps, trained, validation)
        ok = True
    finally:
        close_run(ctx.run_id, ok, ctx.workdir)
    summary = build_summary(ctx, trained, evaluation, decisions, registered)
    publish_summary(summary)
    if config.approval.in_flow:
        summary["approval"] = request_approval(registered.model, registered.version, config.approval)
    return summary


def gate_and_register(ctx: RunContext, steps: TaskSteps, trained: TrainedAdapter, validation: GateDecision):
    """evaluate -> champion -> bias gate -> regression gate -> register (shared with the method comparison)."""
    evaluation = steps.evaluate(ctx, trained)
    champion = steps.evaluate_champion(ctx)
    bias = steps.bias_gate(ctx, trained, evaluation, champion)
    regression = steps.regression_gate(ctx, trained, evaluation, champion)
    decisions = [validation, bias, regression]
    return evaluation, decisions, register(ctx, trained, evaluation, decisions)
