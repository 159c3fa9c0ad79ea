"""The main flow: data -> validation gate -> train adapter -> evaluate -> bias & regression gates -> register."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.review_adapter import request_approval
from tasks import state
from tasks.config import Config
from tasks.decision import GateDecision
from tasks.lm_steps import TaskSteps, steps_for
from tasks.steps import (RunContext, TrainedAdapter, build_summary, close_run, open_run, pin_base_model,
                         publish_summary, register, validate_data)


@flow(name="train_adapter", log_prints=True)
def train_adapter_flow(config: Config, requested_by: str | None = None) -> dict[str, Any]:
    """Train a PEFT adapter on validated data and register it with its evidence, gates and lineage."""
    steps = steps_for(config.model.task)  # sequence_classification or causal_lm: their train/evaluate/gate steps
    splits = steps.load_data(config)
    base = pin_base_model(config)
    ctx = open_run(config, splits, base, requested_by or state.current_user())
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
        summary["approval"] = request_approval(registered.model, registered.version, config.approval,
                                               config.registry.review_period_days)
    return summary


def gate_and_register(ctx: RunContext, steps: TaskSteps, trained: TrainedAdapter, validation: GateDecision):
    """evaluate -> champion -> bias gate -> regression gate -> register (shared with the method comparison)."""
    evaluation = steps.evaluate(ctx, trained)
    champion = steps.evaluate_champion(ctx)
    bias = steps.bias_gate(ctx, trained, evaluation, champion)
    regression = steps.regression_gate(ctx, trained, evaluation, champion)
    decisions = [validation, bias, regression]
    return evaluation, decisions, register(ctx, trained, evaluation, decisions)
