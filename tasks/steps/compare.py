"""The method comparison's steps: one child run per method, the table, and the winner back from its artifacts."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.training import comparison as compare
from tasks.governance import registry
from tasks.gates import reports
from tasks.training.adapter_files import recompute_digest
from tasks.training.comparison import MethodResult, Recommendation
from tasks.core.config import CompareConfig, Config
from tasks.core.peft_config import METHOD_ALIASES, PeftConfig
from tasks.core.errors import InputError
from tasks.core.names import ARTIFACT_ADAPTER, ARTIFACT_REPORTS, RUN_TAG_STAGE, Tag
from tasks.core.peft_config import shared_between
from tasks.governance.loader import fetch_adapter
from tasks.steps.classification import bias_gate, evaluate_adapter, evaluate_champion, regression_gate, train
from tasks.steps.common import RunContext, close_run, open_run, scratch_dir
from tasks.training.methods import METHODS, method_label
from tasks.training.recipe import TrainedAdapter, TrainingJob, load_trained
from tasks.training.loop import TrainStats

step = task(cache_policy=NO_CACHE, retries=0)


def method_config(config: Config, name: str) -> Config:
    """The run config of one compared method: same data, base, budget and gates; its own method and learning rate.

    The configured ``peft`` section is used as it is for its own method; another method starts from its defaults
    and takes over the configured target modules (and rank/alpha/dropout where it has them).
    """
    spec = METHOD_ALIASES.get(name, {"method": name})
    if spec["method"] not in METHODS:
        raise InputError(f"unknown method {name!r} in compare.methods / --methods; choose from "
                         f"{', '.join(list(METHODS) + list(METHOD_ALIASES))}")
    if name == config.peft.method:
        peft = config.peft
    else:
        own = config.peft.model_dump()
        shared = {k: own[k] for k in shared_between(config.peft.method, spec["method"])}
        if spec["method"] == "ia3":
            shared["feedforward_modules"] = [m for m in own["feedforward_modules"] if m in own["target_modules"]]
        peft = PeftConfig.model_validate({**shared, **spec})
    lr = config.compare.learning_rates.get(name, config.compare.learning_rates.get(spec["method"],
                                                                                  config.training.learning_rate))
    return config.model_copy(update={"peft": peft,
                                     "training": config.training.model_copy(update={"learning_rate": lr})})


@step(name="train-method")
def train_method(parent: RunContext, name: str, config: Config) -> MethodResult:
    """Train and evaluate one method in its own MLflow child run, and put its candidate through the bias and
    regression gates there (so only a method that can be registered is recommended); its adapter is logged to that
    run."""
    ctx = open_run.fn(config, parent.splits, parent.base, parent.requested_by, parent_run_id=parent.run_id,
                      run_name=f"compare-{name}", request=parent.request)
    c = registry.client()
    ok = False
    try:
        start = time.perf_counter()
        with compare.peak_memory() as mem:
            trained = train.fn(ctx)
        wall = time.perf_counter() - start
        evaluation = evaluate_adapter.fn(ctx, trained)
        champion = evaluate_champion.fn(ctx)
        gates = [gate.fn(ctx, trained, evaluation, champion) for gate in (bias_gate, regression_gate)]
        registry.log_path(c, ctx.run_id, trained.adapter_dir, ARTIFACT_ADAPTER)
        registry.log_path(c, ctx.run_id, ctx.workdir / ARTIFACT_REPORTS, ARTIFACT_REPORTS)
        cc = config.compare
        test = evaluation.metrics["test"]
        metric = config.gates.regression.primary_metric
        result = MethodResult(
            method=method_label(config.peft), run_id=ctx.run_id, test_primary=float(test[metric]),
            test_accuracy=float(test["accuracy"]), trainable_params=trained.trainable_params,
            base_params=trained.total_params - trained.trainable_params if config.peft.method != "full"
            else trained.total_params,
            adapter_bytes=trained.size_bytes, wall_seconds=wall, tokens_per_second=trained.stats.tokens_per_second,
            peak_memory_mib=mem["growth_mib"], cost=wall / 3600 * cc.price_per_hour, adapter_digest=trained.digest,
            gates={d.gate: str(d.outcome.value) for d in gates},
            extra={"name": name, "steps": trained.stats.steps, "epochs": trained.stats.epochs,
                   "best_epoch": trained.stats.best_epoch,
                   "train_seconds": trained.stats.seconds, "real_tokens": trained.stats.real_tokens,
                   "padded_tokens": trained.stats.padded_tokens, "learning_rate": config.training.learning_rate})
        registry.log_metrics(c, ctx.run_id, {"compare_wall_seconds": wall, "compare_peak_memory_mib": mem["growth_mib"],
                                             "compare_cost": result.cost, f"test_{metric}": result.test_primary})
        registry.set_run_tags(c, ctx.run_id, {Tag.PEFT_METHOD: result.method, RUN_TAG_STAGE: "compared",
                                              Tag.ADAPTER_DIGEST: trained.digest,
                                              "adaptrail.compare.worker": f"{socket.gethostname()}:{os.getpid()}"})
        ok = True
        return result
    finally:
        close_run(ctx.run_id, ok, ctx.workdir)


@step(name="publish-comparison")
def publish_comparison(parent: RunContext, results: list[MethodResult], cc: CompareConfig
                       ) -> tuple[Recommendation, dict[str, Any]]:
    """Recommend by the configured rule; log the table (Markdown, CSV, plot) to the parent run and to Prefect."""
    metric = parent.config.gates.regression.primary_metric
    compare.mark_pareto(results)
    rec = compare.recommend(results, metric, cc.tolerance, cc.prefer)
    t = parent.config.training
    settings = {"epochs": t.epochs, "max_steps": t.max_steps, "batch size": t.batch_size,
                "rows (train/validation/test)": "/".join(str(len(f)) for f in
                                                         (parent.splits.train, parent.splits.validation,
                                                          parent.splits.test)),
                "price per hour": f"{cc.price_per_hour:g} {cc.currency}", "task runner": cc.task_runner}
    md = compare.to_markdown(results, rec, metric, cc.currency, settings)
    out = parent.workdir / "comparison"
    reports.write_text(out / "comparison.md", md)
    reports.write_text(out / "comparison.csv", compare.to_csv(results))
    compare.plot(results, metric, out / "comparison.png", rec.method)
    reports.write_json(out / "recommendation.json", {"method": rec.method, "rule": rec.rule, "reason": rec.reason,
                                                     "eligible": rec.eligible})
    c = registry.client()
    registry.log_path(c, parent.run_id, out, "comparison")
    registry.set_run_tags(c, parent.run_id, {"adaptrail.compare.recommended": rec.method or "none",
                                             "adaptrail.compare.rule": rec.rule[:5000]})
    rows = [dict(zip(compare.headers(metric, cc.currency), row)) for row in compare.table_rows(results)]
    create_table_artifact(rows, key="compare-methods-table", description=f"recommended: {rec.method or 'none'}")
    create_markdown_artifact(md, key="compare-methods-report", description=f"recommended: {rec.method or 'none'}")
    return rec, {"markdown": md, "rows": [r.row() for r in results]}


@step(name="reload-winner")
def reload_winner(parent: RunContext, result: MethodResult, config: Config) -> tuple[RunContext, TrainedAdapter]:
    """The recommended method's adapter, back from its child run's artifacts (the exact files compared)."""
    c = registry.client()
    workdir = scratch_dir(result.run_id)
    adapter_dir = fetch_adapter(registry.artifact_uri(c, result.run_id, ARTIFACT_ADAPTER), workdir)
    if adapter_dir.name != ARTIFACT_ADAPTER:
        adapter_dir = adapter_dir.rename(workdir / ARTIFACT_ADAPTER)
    on_disk = recompute_digest(adapter_dir)
    if on_disk != result.adapter_digest:
        raise InputError(f"the {result.method} adapter in run {result.run_id} has digest {on_disk[:16]}..., the "
                         f"comparison measured {result.adapter_digest[:16]}...; its artifacts changed, re-run compare")
    x = result.extra
    stats = TrainStats(epochs=x["epochs"], steps=x["steps"], seconds=x["train_seconds"],
                       real_tokens=x["real_tokens"], padded_tokens=x["padded_tokens"], best_epoch=x["best_epoch"])
    total = result.base_params + (result.trainable_params if config.peft.method != "full" else 0)
    job = TrainingJob(config=config, base=parent.base, labels=list(parent.splits.labels),
                      dataset_digest=parent.splits.digest)
    trained = load_trained(job, adapter_dir, result.adapter_digest, stats, result.trainable_params, total)
    ctx = RunContext(config=config, splits=parent.splits, base=parent.base, run_id=result.run_id, workdir=workdir,
                     requested_by=parent.requested_by, flow_run_id=parent.flow_run_id, request=parent.request)
    return ctx, trained


def check_supported(config: Config) -> None:
    if config.model.task != "sequence_classification":
        raise InputError(f"adaptrail compare supports model.task sequence_classification (got {config.model.task!r}); "
                         "compare causal-LM methods with one `adaptrail run` per method")
