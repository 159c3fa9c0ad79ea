"""``training.search`` as steps: every trial trained in its own MLflow child run, fanned out by a Prefect task
runner (threads); the best trial's adapter, back from its files, becomes the run's adapter."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from tasks.core.config import Config
from tasks.core.errors import InputError
from tasks.core.names import ARTIFACT_ADAPTER, ARTIFACT_REPORTS, RUN_TAG_STAGE
from tasks.gates import reports
from tasks.governance import registry
from tasks.steps.common import RunContext, close_run, log_trained, open_run, start_training, step
from tasks.training.adapter_files import recompute_digest
from tasks.training.loop import TrainStats
from tasks.training.recipe import TrainedAdapter, TrainingJob, load_trained, train_adapter
from tasks.training.search import apply, search

SEARCH_REPORT = "search.json"


@step(name="search-trial")
def train_trial(parent: RunContext, number: int, config: Config, trials_dir: Path) -> dict[str, Any]:
    """One trial in a child run of the parent: trained on the training split, scored on validation; its adapter
    stays in ``trials_dir/NUMBER`` until the search is over."""
    ctx = open_run.fn(config, parent.splits, parent.base, parent.requested_by, parent_run_id=parent.run_id,
                      run_name=f"search-{number}", request=parent.request)
    ok = False
    try:
        trained = train_adapter(ctx.job(), ctx.splits.train, ctx.splits.validation, trials_dir / str(number),
                                start_training(ctx))
        log_trained(ctx, trained)
        value = trained.stats.history[trained.stats.best_epoch - 1]["val_macro_f1"]
        c = registry.client()
        registry.log_metrics(c, ctx.run_id, {"search_val_macro_f1": value})
        registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "search-trial", "adaptrail.search.trial": str(number)})
        ok = True
        return {"value": value, "run_id": ctx.run_id, "digest": trained.digest, "stats": asdict(trained.stats),
                "trainable": trained.trainable_params, "total": trained.total_params}
    finally:
        close_run(ctx.run_id, ok, ctx.workdir)


def search_and_train(ctx: RunContext) -> TrainedAdapter:
    """Run the search; the best trial's adapter (verified against the digest it was saved with) is the run's."""
    trials_dir = ctx.workdir / "trials"
    outcomes: dict[int, dict[str, Any]] = {}

    def train_batch(batch: list[tuple[int, Config]]) -> list[tuple[float, str]]:
        with ThreadPoolTaskRunner(max_workers=len(batch)) as runner:
            futures = [runner.submit(train_trial, parameters={"parent": ctx, "number": n, "config": cfg,
                                                              "trials_dir": trials_dir}) for n, cfg in batch]
            results = [f.result() for f in futures]
        outcomes.update({n: r for (n, _), r in zip(batch, results)})
        return [(r["value"], r["run_id"]) for r in results]

    result = search(ctx.config, train_batch)
    best = result.best
    first = next(n for n, o in outcomes.items() if o["run_id"] == best.run_id)  # who trained these settings
    chosen, outcome = apply(ctx.config, best.params), outcomes[first]
    adapter_dir = ctx.workdir / ARTIFACT_ADAPTER
    (trials_dir / str(first)).rename(adapter_dir)
    shutil.rmtree(trials_dir, ignore_errors=True)
    if recompute_digest(adapter_dir) != outcome["digest"]:
        raise InputError(f"the adapter of search trial {first} changed on disk after training; run again")
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / SEARCH_REPORT, result.to_dict())
    c = registry.client()
    registry.log_params(c, ctx.run_id, {f"search.best.{k}": v for k, v in best.params.items()}
                        | {"search.best.trial": best.number, "search.best.run_id": best.run_id})
    on_epoch = start_training(ctx)
    stats = TrainStats(**outcome["stats"])
    for record in stats.history:  # the chosen trial's curve on the run itself
        on_epoch(int(record["epoch"]), record)
    job = TrainingJob(config=chosen, base=ctx.base, labels=list(ctx.splits.labels), dataset_digest=ctx.splits.digest)
    return log_trained(ctx, load_trained(job, adapter_dir, outcome["digest"], stats, outcome["trainable"],
                                         outcome["total"]))
