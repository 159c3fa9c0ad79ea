"""The main flow's steps as Prefect tasks: each is a thin wrapper over plain functions in ``tasks/``."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks import adapter as adapter_io
from tasks import approvals
from tasks import registry, reports, state
from tasks.config import Config
from tasks.data import DatasetSplits, load_dataset_splits
from tasks.decision import GateDecision
from tasks.errors import ValidationFailed
from tasks.evaluation import Evaluation, encoded_split, evaluate, predict_proba
from tasks.lineage import code_version, flow_run_id
from tasks.methods import method_label
from tasks.model import BaseModelRef, count_parameters, load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft
from tasks.names import (ALIAS_CANDIDATE, ARTIFACT_ADAPTER, ARTIFACT_CONFIG, ARTIFACT_REPORTS, ARTIFACT_VALIDATION,
                         RUN_TAG_CHAMPION, RUN_TAG_FLOW_RUN_ID, RUN_TAG_STAGE, ApprovalStatus, GateOutcome, Tag)
from tasks.regression import classification_metrics
from tasks import gates
from tasks.training import TrainStats, seed_everything, train

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


@dataclass
class TrainedAdapter:
    model: Any
    tokenizer: Any
    adapter_dir: Path
    digest: str
    size_bytes: int
    trainable_params: int
    total_params: int
    stats: TrainStats
    max_length: int
    batch_size: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    def predict(self, texts: list[str]):
        """Class probabilities for raw texts (the bias gate's counterfactual test and the golden set use it)."""
        return predict_proba(self.model, self.tokenizer, texts, self.max_length, self.batch_size)


@dataclass
class Registered:
    model: str
    version: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)


@step(name="load-data")
def load_data(config: Config) -> DatasetSplits:
    return load_dataset_splits(config.data)


@step(name="pin-base-model")
def pin_base_model(config: Config) -> BaseModelRef:
    return resolve_base_model(config.model)


@step(name="open-run")
def open_run(config: Config, splits: DatasetSplits, base: BaseModelRef, requested_by: str,
             parent_run_id: str | None = None, run_name: str = "train") -> RunContext:
    """Start the MLflow run with the resolved config, params, datasets and lineage tags.

    With ``parent_run_id`` the run is a child run (the method comparison nests one run per method).
    """
    c = registry.client()
    fr = flow_run_id()
    parent = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
    run_id = registry.start_run(c, config.registry.experiment, run_name=f"{config.registry.model_name}-{run_name}",
                                tags={RUN_TAG_FLOW_RUN_ID: fr, RUN_TAG_STAGE: "validating",
                                      Tag.REQUESTED_BY: requested_by, Tag.DATASET_DIGEST: splits.digest, **parent})
    state.runs_dir().mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=state.runs_dir()))
    registry.log_params(c, run_id, config.flat())
    registry.log_params(c, run_id, {"data.rows." + k: v for k, v in splits.summary()["rows"].items()}
                        | {"data.digest": splits.digest, "data.dedup": splits.dedup, "base.digest": base.digest,
                           "base.revision": base.revision})
    cfg_file = reports.write_text(workdir / ARTIFACT_CONFIG, config.to_yaml())
    registry.log_path(c, run_id, cfg_file)
    registry.log_datasets(c, run_id, splits)
    return RunContext(config=config, splits=splits, base=base, run_id=run_id, workdir=workdir,
                      requested_by=requested_by, flow_run_id=fr)


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


def adapter_metadata(ctx: RunContext) -> dict[str, Any]:
    """``adaptrail.json`` of the adapter: what a loader needs to rebuild it (task, labels, method, base)."""
    cfg = ctx.config
    return {
        "task": cfg.model.task, "labels": ctx.splits.labels, "max_length": cfg.model.max_length,
        "peft": cfg.peft.model_dump(mode="json"), "base_model": ctx.base.to_dict(),
        "dataset_digest": ctx.splits.digest, "trust_remote_code": cfg.model.trust_remote_code,
    }


@step(name="train-adapter")
def train_adapter(ctx: RunContext) -> TrainedAdapter:
    """Attach the adapter to the frozen base, train it, save only the adapter (+ manifest)."""
    if ctx.config.training.processes > 1:  # several ranks under torchrun; returns the same TrainedAdapter
        from tasks.distributed import train_distributed
        return train_distributed(ctx)
    cfg = ctx.config
    labels = ctx.splits.labels
    seed_everything(cfg.training.seed)
    tokenizer = load_tokenizer(ctx.base, cfg.model)
    model, fresh = load_classifier(ctx.base, cfg.model, labels)
    model = wrap_with_peft(model, cfg.peft, cfg.model.task, fresh)
    trainable, total = count_parameters(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_enc = encoded_split(tokenizer, ctx.splits.train, labels, cfg.model.max_length)
    val_enc = encoded_split(tokenizer, ctx.splits.validation, labels, cfg.model.max_length)
    c = registry.client()

    def val_metrics(logits) -> dict[str, float]:
        m = classification_metrics([labels[i] for i in val_enc.labels], [labels[i] for i in logits.argmax(1)], labels)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        registry.log_metrics(c, ctx.run_id, {k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "training"})
    stats = train(model, train_enc, val_enc, pad, cfg.training, on_epoch=on_epoch, evaluate=val_metrics)
    adapter_dir = ctx.workdir / ARTIFACT_ADAPTER
    digest = adapter_io.save_adapter(model, adapter_dir, adapter_metadata(ctx), cfg.peft)
    size = adapter_io.dir_size(adapter_dir)
    registry.log_metrics(c, ctx.run_id, {"train_seconds": stats.seconds, "train_tokens_per_second": stats.tokens_per_second,
                                         "trainable_params": trainable, "adapter_bytes": size})
    return TrainedAdapter(model=model, tokenizer=tokenizer, adapter_dir=adapter_dir, digest=digest,
                          size_bytes=size, trainable_params=trainable, total_params=total,
                          stats=stats, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)


@step(name="evaluate")
def evaluate_adapter(ctx: RunContext, trained: TrainedAdapter) -> Evaluation:
    cfg = ctx.config
    ev = evaluate(trained.model, trained.tokenizer, ctx.splits, cfg.model.max_length, cfg.training.eval_batch_size)
    flat: dict[str, float] = {}
    for split, m in ev.metrics.items():
        flat[f"{split}_accuracy"] = m["accuracy"]
        flat[f"{split}_macro_f1"] = m["macro_f1"]
    for label, pc in ev.metrics["test"]["per_class"].items():
        for k in ("precision", "recall", "f1"):
            flat[registry.metric_key("test", k, label)] = pc[k]
    c = registry.client()
    registry.log_metrics(c, ctx.run_id, flat)
    out = ctx.workdir / ARTIFACT_REPORTS
    reports.write_json(out / "evaluation.json", ev.metrics)
    reports.write_text(out / "evaluation.md", reports.evaluation_markdown(ev.metrics, ctx.splits.labels))
    return ev


@step(name="evaluate-champion")
def evaluate_champion(ctx: RunContext) -> gates.ChampionEvidence | None:
    """The current champion (if any), loaded through the verified loader and scored on this run's test split."""
    evidence = gates.load_champion(ctx.config.registry.model_name, ctx.splits, ctx.config.training.eval_batch_size)
    if evidence is not None:
        c = registry.client()
        registry.set_run_tags(c, ctx.run_id, {RUN_TAG_CHAMPION: evidence.version})
        if evidence.usable:
            registry.log_metrics(c, ctx.run_id, {f"champion_test_{k}": evidence.test_metrics[k]
                                                 for k in ("accuracy", "macro_f1")})
    return evidence


def _log_gate(ctx: RunContext, decision: GateDecision) -> GateDecision:
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


@step(name="bias-gate")
def bias_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation,
              champion: gates.ChampionEvidence | None) -> GateDecision:
    return _log_gate(ctx, gates.run_bias_gate(evaluation, ctx.config.gates.bias, trained.predict, champion))


@step(name="regression-gate")
def regression_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation,
                    champion: gates.ChampionEvidence | None) -> GateDecision:
    return _log_gate(ctx, gates.run_regression_gate(ctx.splits, evaluation, ctx.config, trained.predict, champion))


def _gate_status(decisions: list[GateDecision]) -> tuple[str, str]:
    failed = [d for d in decisions if d.failed]
    if failed:
        return ApprovalStatus.REJECTED, "; ".join(f"gate {d.gate} failed: {d.reason}" for d in failed)
    return ApprovalStatus.PENDING, "registered; all gates passed or skipped; awaiting review"


def version_tags(ctx: RunContext, trained: TrainedAdapter, decisions: list[GateDecision], now: datetime
                 ) -> dict[str, str]:
    """Every ``adaptrail.`` tag DESIGN.md defines, as known at registration."""
    status, reason = _gate_status(decisions)
    outcomes = {d.gate: d.outcome for d in decisions}
    return {
        Tag.APPROVAL_STATUS: status,
        Tag.APPROVAL_BY: "adaptrail/gates",
        Tag.APPROVAL_AT: now.isoformat(timespec="seconds"),
        Tag.APPROVAL_REASON: reason,
        Tag.REVIEW_DUE: (now + timedelta(days=ctx.config.registry.review_period_days)).date().isoformat(),
        Tag.GATE_VALIDATION: outcomes.get("validation", GateOutcome.SKIPPED),
        Tag.GATE_BIAS: outcomes.get("bias", GateOutcome.SKIPPED),
        Tag.GATE_REGRESSION: outcomes.get("regression", GateOutcome.SKIPPED),
        Tag.DATASET_DIGEST: ctx.splits.digest,
        Tag.BASE_MODEL: ctx.base.id,
        Tag.BASE_MODEL_REVISION: ctx.base.revision,
        Tag.BASE_MODEL_DIGEST: ctx.base.digest,
        Tag.CODE_VERSION: code_version(),
        Tag.FLOW_RUN_ID: ctx.flow_run_id,
        Tag.REQUESTED_BY: ctx.requested_by,
        Tag.ADAPTER_DIGEST: trained.digest,
        Tag.PEFT_METHOD: method_label(ctx.config.peft),
        Tag.PEFT_TRAINABLE_PARAMS: str(trained.trainable_params),
        Tag.PEFT_TRAINABLE_FRACTION: f"{trained.trainable_fraction:.6f}",
    }


def _server_failure(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry registering only after a server or network failure (never after a refusal or a bug)."""
    return registry.is_transient(state.data if isinstance(state.data, BaseException) else None)


# Registering talks to the tracking server and the ledger database; it is idempotent per flow run, so a retry
# after a server restart neither loses nor duplicates the version or its ledger events.
@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_server_failure)
def register(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation, decisions: list[GateDecision]
             ) -> Registered:
    """Log the evidence, then create the model version with all its tags in one call (or find the one an
    earlier attempt of this flow run created) and record it in the ledger once."""
    c = registry.client()
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / "gates.json", [d.to_dict() for d in decisions])
    reports.write_text(ctx.workdir / ARTIFACT_REPORTS / "gates.md", reports.gates_markdown(decisions))
    registry.log_path(c, ctx.run_id, trained.adapter_dir, ARTIFACT_ADAPTER)
    registry.log_path(c, ctx.run_id, ctx.workdir / ARTIFACT_REPORTS, ARTIFACT_REPORTS)
    tags = version_tags(ctx, trained, decisions, datetime.now(timezone.utc))
    headline, value = evaluation.headline_metric()
    registry.set_run_tags(c, ctx.run_id, {k: v for k, v in tags.items() if k.startswith(("adaptrail.gate", "adaptrail.lineage", "adaptrail.adapter", "adaptrail.peft"))})
    mv = registry.register_version(
        c, ctx.config.registry.model_name, ctx.run_id, registry.artifact_uri(c, ctx.run_id, ARTIFACT_ADAPTER), tags,
        description=f"{method_label(ctx.config.peft)} adapter on {ctx.base.id}; test {headline} {value:.4f}",
    )
    approvals.record_registration(
        mv.name, mv.version, tags[Tag.APPROVAL_STATUS], {d.gate: str(d.outcome) for d in decisions},
        {"gates": {d.gate: {"outcome": str(d.outcome), "reason": d.reason} for d in decisions},
         "adapter_digest": trained.digest, "dataset_digest": ctx.splits.digest,
         f"test_{headline}": value, "run_id": ctx.run_id},
        actor=ctx.requested_by)
    if tags[Tag.APPROVAL_STATUS] == ApprovalStatus.PENDING:
        registry.set_alias(c, ctx.config.registry.model_name, ALIAS_CANDIDATE, mv.version)
    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "registered"})
    return Registered(model=mv.name, version=str(mv.version), status=tags[Tag.APPROVAL_STATUS], tags=tags)


def close_run(run_id: str, ok: bool, workdir: Path | None) -> None:
    """End the MLflow run (FAILED on any error) and drop the local scratch copy of its artifacts."""
    registry.end_run(registry.client(), run_id, ok)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


@step(name="publish-summary")
def publish_summary(summary: dict[str, Any]) -> None:
    create_markdown_artifact(reports.summary_markdown(summary), key="train-adapter-summary",
                             description=f"{summary['model']} v{summary['version']}")


def build_summary(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation, decisions: list[GateDecision],
                  registered: Registered) -> dict[str, Any]:
    return {
        "model": registered.model,
        "version": registered.version,
        "status": registered.status,
        "gates": {d.gate: str(d.outcome) for d in decisions},
        "gate_reasons": {d.gate: d.reason for d in decisions},
        "metrics": evaluation.summary_metrics(),
        "adapter_digest": trained.digest,
        "adapter_bytes": trained.size_bytes,
        "trainable_params": trained.trainable_params,
        "trainable_fraction": trained.trainable_fraction,
        "train_seconds": trained.stats.seconds,
        "dataset_digest": ctx.splits.digest,
        "base_model": ctx.base.id,
        "base_model_revision": ctx.base.revision,
        "run_id": ctx.run_id,
        "experiment": ctx.config.registry.experiment,
        "tracking_uri": state.tracking_uri(),
        "flow_run_id": ctx.flow_run_id,
    }
