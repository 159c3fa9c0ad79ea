"""The register step: log the evidence, create the model version with its fact tags, record it in the ledger
(the approval state included), then mirror the ledger to the tags; and the run summary built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.core import state
from tasks.core.lineage import code_version
from tasks.core.names import (ACTOR_GATES, ALIAS_CANDIDATE, ARTIFACT_ADAPTER, ARTIFACT_REPORTS,
                              DEFAULT_REVIEW_PERIOD_DAYS, RUN_TAG_STAGE, ApprovalStatus, GateOutcome, Tag)
from tasks.gates import reports
from tasks.gates.decision import GateDecision
from tasks.governance import attestation, card, mlbom, registry
from tasks.governance.ledger_view import STATE_TAGS
from tasks.governance.registration import record_registration
from tasks.steps.common import RunContext
from tasks.steps.kinds import Evaluated
from tasks.training.environment import ENVIRONMENT_FILE, training_environment
from tasks.training.methods import method_label
from tasks.training.recipe import TrainedAdapter


@dataclass
class Registered:
    model: str
    version: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)


def gate_status(decisions: list[GateDecision]) -> tuple[str, str]:
    """The approval status the gates' verdict gives a new version, and why."""
    failed = [d for d in decisions if d.failed]
    if failed:
        return ApprovalStatus.REJECTED, "; ".join(f"gate {d.gate} failed: {d.reason}" for d in failed)
    return ApprovalStatus.PENDING, "registered; all gates passed or skipped; awaiting review"


def version_tags(ctx: RunContext, trained: TrainedAdapter, decisions: list[GateDecision], now: datetime
                 ) -> dict[str, str]:
    """Every ``adaptrail.`` tag DESIGN.md defines, as known at registration."""
    status, reason = gate_status(decisions)
    outcomes = {d.gate: d.outcome for d in decisions}
    return {
        Tag.APPROVAL_STATUS: status,
        Tag.APPROVAL_BY: ACTOR_GATES,
        Tag.APPROVAL_AT: now.isoformat(timespec="seconds"),
        Tag.APPROVAL_REASON: reason,
        Tag.REVIEW_DUE: (now + timedelta(days=DEFAULT_REVIEW_PERIOD_DAYS)).date().isoformat(),
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


def bom_facts(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluated, decisions: list[GateDecision],
              tags: dict[str, str]) -> mlbom.BomFacts:
    """What the version's ML-BOM states: the tags just computed, the run's data, metrics, gates and settings, and
    the packages of this (the training) environment."""
    config = ctx.config
    settings = {f"peft.{k}": v for k, v in config.peft.model_dump(mode="json").items()} | \
        {f"training.{k}": v for k, v in config.training.model_dump(mode="json").items() if not isinstance(v, dict)}
    return mlbom.BomFacts(
        model_name=config.registry.model_name, run_id=ctx.run_id, adapter_digest=trained.digest,
        adapter_bytes=trained.size_bytes, peft_method=tags[Tag.PEFT_METHOD], trainable_params=trained.trainable_params,
        base_id=ctx.base.id, base_revision=ctx.base.revision, base_digest=ctx.base.digest,
        dataset_path=str(config.data.path), dataset_digest=ctx.splits.digest,
        dataset_rows={k: len(v) for k, v in ctx.splits.frames().items()}, labels=list(ctx.splits.labels),
        task=config.model.task, metrics={k.removeprefix("test_"): float(v)
                                         for k, v in evaluation.summary_metrics().items() if k.startswith("test_")},
        gates={d.gate: {"outcome": str(d.outcome), "reason": d.reason} for d in decisions},
        hyperparameters=settings, code_version=tags[Tag.CODE_VERSION], flow_run_id=ctx.flow_run_id,
        requested_by=ctx.requested_by, created_at=tags[Tag.APPROVAL_AT], packages=mlbom.environment_packages())


def _server_failure(_task: Any, _task_run: Any, task_state: Any) -> bool:
    """Retry registering only after a server or network failure (never after a refusal or a bug)."""
    return registry.is_transient(task_state.data if isinstance(task_state.data, BaseException) else None)


# Registering talks to the tracking server and the ledger database; it is idempotent per flow run, so a retry
# after a server restart neither loses nor duplicates the version or its ledger events.
@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=_server_failure)
def register(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluated, decisions: list[GateDecision]
             ) -> Registered:
    """Log the evidence; create the model version with its fact tags (or find the one an earlier attempt of this
    flow run created); record it in the ledger once, approval state included; mirror the ledger to the tags."""
    c = registry.client()
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / "gates.json", [d.to_dict() for d in decisions])
    reports.write_text(ctx.workdir / ARTIFACT_REPORTS / "gates.md", reports.gates_markdown(decisions))
    tags = version_tags(ctx, trained, decisions, datetime.now(timezone.utc))
    # the ML-BOM is evidence like the reports: validated and logged before the version exists, or no version
    mlbom.write(bom_facts(ctx, trained, evaluation, decisions, tags), ctx.workdir / ARTIFACT_REPORTS / mlbom.MLBOM_FILE)
    # what byte-identity of a re-run depends on (machine, threads, library versions): `adaptrail reproduce` reads it
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / ENVIRONMENT_FILE,
                       training_environment(ctx.config.training.seed))
    # the adapter card's facts about the data and the base, as this run saw them
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / card.DATASET_REPORT, ctx.splits.profile())
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / card.BASE_REPORT,
                       card.base_model_facts(ctx.base.id, ctx.base.revision, ctx.base.digest, ctx.base.path))
    registry.log_path(c, ctx.run_id, trained.adapter_dir, ARTIFACT_ADAPTER)
    registry.log_path(c, ctx.run_id, ctx.workdir / ARTIFACT_REPORTS, ARTIFACT_REPORTS)
    # the adapter's OpenSSF model-signing bundle (service key, offline), logged beside adapter/ before the version
    # exists; the registered event records its digest, so the ledger's signature covers it (attestation.py)
    signature = attestation.sign_and_log(c, ctx.run_id, trained.adapter_dir, ctx.workdir)
    facts = {k: v for k, v in tags.items() if k not in STATE_TAGS}
    headline, value = evaluation.headline_metric()
    registry.set_run_tags(c, ctx.run_id, {k: v for k, v in tags.items() if k.startswith(
        ("adaptrail.gate", "adaptrail.lineage", "adaptrail.adapter", "adaptrail.peft"))})
    mv = registry.register_version(
        c, ctx.config.registry.model_name, ctx.run_id, registry.artifact_uri(c, ctx.run_id, ARTIFACT_ADAPTER), facts,
        description=f"{method_label(ctx.config.peft)} adapter on {ctx.base.id}; test {headline} {value:.4f}",
    )
    status = tags[Tag.APPROVAL_STATUS]
    record_registration(
        mv.name, mv.version, status, {d.gate: str(d.outcome) for d in decisions},
        {"gates": {d.gate: {"outcome": str(d.outcome), "reason": d.reason} for d in decisions},
         "adapter_digest": trained.digest, "dataset_digest": ctx.splits.digest,
         f"test_{headline}": value, "run_id": ctx.run_id},
        actor=ctx.requested_by, initial_state={k: tags[k] for k in STATE_TAGS}, request=ctx.request,
        signature=signature)
    if status == ApprovalStatus.PENDING:
        registry.set_alias(c, ctx.config.registry.model_name, ALIAS_CANDIDATE, mv.version)
    card.publish(mv.name, str(mv.version))  # the adapter card, and its summary as the version's description
    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "registered"})
    return Registered(model=mv.name, version=str(mv.version), status=status, tags=tags)


def build_summary(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluated, decisions: list[GateDecision],
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
