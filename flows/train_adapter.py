"""The main flow: data -> validation gate -> train adapter -> evaluate -> bias & regression gates -> register."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.review_adapter import request_approval
from tasks import state
from tasks.config import Config
from tasks.steps import (bias_gate, build_summary, close_run, evaluate_adapter, evaluate_champion, load_data,
                         open_run, pin_base_model, publish_summary, register, regression_gate, train_adapter,
                         validate_data)


@flow(name="train_adapter", log_prints=True)
def train_adapter_flow(config: Config, requested_by: str | None = None) -> dict[str, Any]:
    """Train a PEFT adapter on validated data and register it with its evidence, gates and lineage."""
    splits = load_data(config)
    base = pin_base_model(config)
    ctx = open_run(config, splits, base, requested_by or state.current_user())
    ok = False
    try:
        validation = validate_data(ctx)
        trained = train_adapter(ctx)
        evaluation = evaluate_adapter(ctx, trained)
        champion = evaluate_champion(ctx)
        bias = bias_gate(ctx, trained, evaluation, champion)
        regression = regression_gate(ctx, trained, evaluation, champion)
        decisions = [validation, bias, regression]
        registered = register(ctx, trained, evaluation, decisions)
        ok = True
    finally:
        close_run(ctx.run_id, ok, ctx.workdir)
    summary = build_summary(ctx, trained, evaluation, decisions, registered)
    publish_summary(summary)
    if config.approval.in_flow:
        summary["approval"] = request_approval(registered.model, registered.version, config.approval,
                                               config.registry.review_period_days)
    return summary
