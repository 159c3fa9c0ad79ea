"""The proof-of-concept flow: several PEFT methods on the same split and budget, side by side; the recommended one
goes through the normal gates into the registry.

    data -> validation gate -> [train, evaluate, bias + regression gates for each method (child runs; fanned out
         by the task runner)] -> comparison table, Pareto views + recommendation among the methods that passed
         -> winner, back from its files: champion, bias gate, regression gate -> register
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.train_adapter import gate_and_register, steps_for
from tasks.core import state
from tasks.steps.compare import check_supported, method_config, publish_comparison, reload_winner, train_method
from tasks.core.config import CompareConfig, Config
from tasks.steps.classification import load_data
from tasks.steps.common import RunContext, close_run, open_run, pin_base_model, publish_summary, validate_data
from tasks.steps.register import build_summary


def task_runner(cc: CompareConfig, n_methods: int):
    """Where the methods train: one at a time, a thread pool, or a Dask cluster (local or at an address)."""
    if cc.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cc.dask_address:
            return DaskTaskRunner(address=cc.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": cc.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=1 if cc.task_runner == "sequential" else n_methods)


def train_methods(parent: RunContext, configs: dict[str, Config], runner) -> list:
    """Fan out: one ``train-method`` task per method on ``runner``; results in the order asked.

    The runner is used directly (not as a subflow's) so the data never becomes flow-run parameters.
    """
    with runner:
        futures = [runner.submit(train_method, parameters={"parent": parent, "name": name, "config": cfg})
                   for name, cfg in configs.items()]
        return [f.result() for f in futures]


@flow(name="compare_methods", log_prints=True)
def compare_methods_flow(config: Config, methods: list[str] | None = None,
                         requested_by: str | None = None, request: dict[str, str] | None = None) -> dict[str, Any]:
    """Compare PEFT methods (quality, trainable parameters, size, time, memory, cost); register the recommended one."""
    check_supported(config)
    names = list(methods or config.compare.methods)
    configs = {name: method_config(config, name) for name in names}
    splits = load_data(config)
    base = pin_base_model(config)
    parent = open_run(config, splits, base, requested_by or state.current_user(), run_name="compare",
                      request=request)
    ok = False
    try:
        validation = validate_data(parent)
        results = train_methods(parent, configs, task_runner(config.compare, len(names)))
        recommendation, table = publish_comparison(parent, results, config.compare)
        ok = True
    finally:
        close_run(parent.run_id, ok, parent.workdir)
    out: dict[str, Any] = {"parent_run_id": parent.run_id, "recommended": recommendation.method,
                           "rule": recommendation.rule, "reason": recommendation.reason, **table}
    if config.compare.register_winner and recommendation.method is not None:
        winner = next(r for r in results if r.method == recommendation.method)
        out["registered"] = register_winner(validation, parent, winner, configs[winner.extra["name"]])
    return out


def register_winner(validation, parent: RunContext, winner, config: Config) -> dict[str, Any]:
    """The recommended adapter through the same gates and registration as the main flow."""
    ctx, trained = reload_winner(parent, winner, config)
    ok = False
    try:
        evaluation, decisions, registered = gate_and_register(ctx, steps_for(config.model.task), trained, validation)
        ok = True
    finally:
        close_run(ctx.run_id, ok, ctx.workdir)
    summary = build_summary(ctx, trained, evaluation, decisions, registered)
    publish_summary(summary)
    return summary
