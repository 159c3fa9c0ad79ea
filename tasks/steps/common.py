"""What every task kind's flow run shares: the run context, opening and closing the MLflow run, the validation
gate, logging training and gates the same way, and the run summary."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.core import state
from tasks.core.canonical import json_sha256
from tasks.core.config import Config
from tasks.core.errors import ValidationFailed
from tasks.core.lineage import flow_run_id
from tasks.core.predictions import PredictFn
from tasks.core.names import (ARTIFACT_CONFIG, ARTIFACT_REPORTS, ARTIFACT_VALIDATION, RUN_TAG_FLOW_RUN_ID,
                              RUN_TAG_CHAMPION, RUN_TAG_CHAMPION_SKIPPED, RUN_TAG_STAGE, Tag)
from tasks.data.splits import DatasetSplits
from tasks.gates import reports
from tasks.gates.decision import GateDecision
from tasks.governance import registry, run_requests, trust
from tasks.governance.loader import ChampionLoad, load_champion
from tasks.training.loop import EpochCallback, StepCallback
from tasks.training.model import BaseModelRef, resolve_base_model
from tasks.training.recipe import TrainedAdapter, TrainingJob

log = logging.getLogger("adaptrail")

# Gates are decisions, never retried; steps run in-process and their inputs (models, frames) are not cached.
step = task(cache_policy=NO_CACHE, retries=0)


@dataclass
class RunContext:
    """What every step after ``open_run`` needs: the config, the data, the pinned base and the MLflow run."""

    config: Config
    splits: DatasetSplits
    base: BaseModelRef
    run_id: str
    workdir: Path
    requested_by: str
    flow_run_id: str
    request: dict[str, str] | None = None  # the requester's signed run request, recorded with the registration

    def job(self) -> TrainingJob:
        """What the training path needs of this run."""
        return TrainingJob(config=self.config, base=self.base, labels=list(self.splits.labels),
                           dataset_digest=self.splits.digest)


@step(name="pin-base-model")
def pin_base_model(config: Config) -> BaseModelRef:
    return resolve_base_model(config.model)


@step(name="open-run")
def open_run(config: Config, splits: DatasetSplits, base: BaseModelRef, requested_by: str,
             parent_run_id: str | None = None, run_name: str = "train", request: dict[str, str] | None = None
             ) -> RunContext:
    """Start the MLflow run with the resolved config, params, datasets and lineage tags.

    With ``parent_run_id`` the run is a child run (the method comparison nests one run per method). Refuses first
    when the pipeline's key could not sign the registration (before any training time is spent).
    """
    trust.require_service_key()
    if parent_run_id is None:  # a child run (one method of a comparison) carries the request its parent checked
        requested_by = run_requests.check_request(request, json_sha256(config.model_dump(mode="json")), requested_by)
    c = registry.client()
    fr = flow_run_id()
    parent = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run_id = registry.start_run(c, config.registry.experiment, run_name=f"{config.registry.model_name}-{run_name}",
                                tags={RUN_TAG_FLOW_RUN_ID: fr, RUN_TAG_STAGE: "validating",
                                      Tag.REQUESTED_BY: requested_by, Tag.DATASET_DIGEST: splits.digest, **parent})
    workdir = scratch_dir(run_id)
    registry.log_params(c, run_id, config.flat())
    registry.log_params(c, run_id, {"data.rows." + k: v for k, v in splits.summary()["rows"].items()}
                        | {"data.digest": splits.digest, "data.dedup": splits.dedup, "base.digest": base.digest,
                           "base.revision": base.revision})
    cfg_file = reports.write_text(workdir / ARTIFACT_CONFIG, config.to_yaml())
    registry.log_path(c, run_id, cfg_file)
    registry.log_datasets(c, run_id, splits)
    return RunContext(config=config, splits=splits, base=base, run_id=run_id, workdir=workdir,
                      requested_by=requested_by, flow_run_id=fr, request=request)


def scratch_dir(run_id: str) -> Path:
    """A fresh local folder for a run's files before they are logged."""
    state.runs_dir().mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=state.runs_dir()))


@step(name="validate-data")
def validate_data(ctx: RunContext) -> GateDecision:
    """Great Expectations gate; a failure stops the flow before training."""
    from validation.suite import run_validation

    c = registry.client()
    out = ctx.workdir / ARTIFACT_VALIDATION
    outcome = run_validation(ctx.splits, ctx.config.gates.validation, out, task=ctx.config.model.task)
    reports.write_json(out / "decision.json", outcome.decision.to_dict())
    registry.log_path(c, ctx.run_id, out, ARTIFACT_VALIDATION)
    registry.set_run_tags(c, ctx.run_id, {Tag.GATE_VALIDATION: outcome.decision.outcome})
    if outcome.decision.failed:
        report = registry.artifact_uri(c, ctx.run_id, f"{ARTIFACT_VALIDATION}/{outcome.html_path.relative_to(out)}")
        local = registry.local_path_of(report)
        raise ValidationFailed(outcome.failures, str(local) if local else report)
    return outcome.decision


def start_training(ctx: RunContext) -> EpochCallback:
    """Mark the run as training; the returned callback logs each epoch's record as step metrics."""
    c = registry.client()
    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "training"})

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        registry.log_metrics(c, ctx.run_id, {k: v for k, v in record.items() if k != "epoch"}, step=epoch)
    return on_epoch


def step_losses(ctx: RunContext) -> StepCallback:
    """The step-level loss curve: ``train_loss_step`` at each optimizer step training reports (every
    ``training.progress_seconds``)."""
    c = registry.client()

    def on_step(step: int, loss: float) -> None:
        registry.log_metrics(c, ctx.run_id, {"train_loss_step": loss}, step=step)
    return on_step


def log_trained(ctx: RunContext, trained: TrainedAdapter, peak_memory_mib: float | None = None) -> TrainedAdapter:
    """The training metrics every trained adapter logs, however it was trained (``peak_memory_mib``: the peak
    resident memory of the process while it trained, where it was measured)."""
    registry.log_metrics(registry.client(), ctx.run_id, {
        "train_seconds": trained.stats.seconds, "train_tokens_per_second": trained.stats.tokens_per_second,
        "trainable_params": trained.trainable_params, "adapter_bytes": trained.size_bytes,
        "epochs_trained": len(trained.stats.history), "epoch_kept": trained.stats.best_epoch}
        | ({"train_peak_memory_mib": peak_memory_mib} if peak_memory_mib is not None else {}))
    return trained


def load_run_champion(ctx: RunContext) -> ChampionLoad | None:
    """The model's champion through the verified loader (None when there is none yet), named on this run."""
    champ = load_champion(ctx.config.registry.model_name)
    if champ is not None and champ.skipped:  # the signed policy's choice, noted on the run
        log.warning("%s; skipped, as the policy says (skip_unloadable_champion)", champ.note)
        registry.set_run_tags(registry.client(), ctx.run_id, {RUN_TAG_CHAMPION_SKIPPED: champ.note})
        return None
    if champ is not None:
        registry.set_run_tags(registry.client(), ctx.run_id, {RUN_TAG_CHAMPION: champ.version})
    return champ


class TimedScoring:
    """A texts -> probabilities function that counts the texts it scores and the seconds scoring takes."""

    def __init__(self, predict: PredictFn):
        self.predict, self.texts, self.seconds = predict, 0, 0.0

    def __call__(self, texts: list[str]):
        start = time.perf_counter()
        out = self.predict(texts)
        self.texts, self.seconds = self.texts + len(texts), self.seconds + time.perf_counter() - start
        return out


def log_scoring(ctx: RunContext, step: str, texts: int, seconds: float) -> None:
    """How many texts a step scored and in how many seconds (``scoring.<step>.texts`` and ``.seconds``): the
    inference throughput of evaluation and the gates, in texts/s."""
    if texts:
        registry.log_metrics(registry.client(), ctx.run_id, {registry.metric_key("scoring", step, "texts"): texts,
                                                             registry.metric_key("scoring", step, "seconds"): seconds})


def log_gate(ctx: RunContext, decision: GateDecision) -> GateDecision:
    """Every gate is logged the same way: JSON + Markdown report, summary metrics, run tag."""
    out = ctx.workdir / ARTIFACT_REPORTS
    reports.write_json(out / f"{decision.gate}.json", decision.to_dict())
    reports.write_text(out / f"{decision.gate}.md", reports.gate_markdown(decision))
    c = registry.client()
    summary = decision.details.get("summary", {}) if isinstance(decision.details, dict) else {}
    registry.log_metrics(c, ctx.run_id, {registry.metric_key(decision.gate, k): v for k, v in summary.items()
                                         if isinstance(v, (int, float))})
    registry.set_run_tags(c, ctx.run_id, {Tag.gate(decision.gate): decision.outcome})
    return decision


def close_run(run_id: str, ok: bool, workdir: Path | None) -> None:
    """End the MLflow run (FAILED on any error) and drop the local scratch copy of its artifacts."""
    registry.end_run(registry.client(), run_id, ok)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


@step(name="publish-summary")
def publish_summary(summary: dict[str, Any]) -> None:
    create_markdown_artifact(reports.summary_markdown(summary), key="train-adapter-summary",
                             description=f"{summary['model']} v{summary['version']}")
