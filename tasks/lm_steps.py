"""The main flow's steps for ``model.task: causal_lm`` (plain functions + thin tasks), and the per-task step table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tasks import adapter as adapter_io
from tasks import causal_lm as lm
from tasks import registry, reports
from tasks.config import Config
from tasks.data import DatasetSplits
from tasks.decision import GateDecision
from tasks.errors import InputError
from tasks.lm_probe import lm_regression_gate, run_stereotype_probe
from tasks.model import count_parameters, load_tokenizer, wrap_with_peft
from tasks.names import ALIAS_CHAMPION, ARTIFACT_ADAPTER, ARTIFACT_REPORTS, RUN_TAG_CHAMPION, RUN_TAG_STAGE
from tasks.steps import (RunContext, TrainedAdapter, _log_gate, bias_gate, evaluate_adapter, evaluate_champion,
                         load_data, regression_gate, step, train_adapter)
from tasks.training import seed_everything, train

GENERAL_TEXT = Path(__file__).resolve().parents[1] / "examples" / "general_text.txt"


@dataclass
class LMChampion:
    """The champion's exact match on this run's test split (empty metrics + notes when it could not be loaded)."""

    version: str
    test_metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return bool(self.test_metrics)


# --- plain functions --------------------------------------------------------------------------------------------


def general_texts(path: str | None, limit: int) -> list[str]:
    """Non-empty lines of the general-text file (default: the shipped examples/general_text.txt)."""
    p = Path(path).expanduser() if path else GENERAL_TEXT
    if not p.is_file():
        raise InputError(f"general text file not found: {p}; set gates.regression.general_text_path to a plain "
                         "text file (one passage per line) or unset it to use examples/general_text.txt")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{p} has no text lines")
    return lines[:limit]


def sentence_scorer(model, tokenizer, max_length: int, batch_size: int) -> Callable[[list[str]], Any]:
    """Sentences -> summed token log-likelihood under ``model`` (the bias probe's scorer)."""
    def score(texts: list[str]):
        total, _ = lm.token_logprobs(model, lm.encode_texts(tokenizer, texts, max_length), tokenizer.pad_token_id,
                                     batch_size)
        return total
    return score


def text_perplexity(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> float:
    return lm.perplexity(model, lm.encode_texts(tokenizer, texts, max_length), tokenizer.pad_token_id, batch_size)


def train_lm(ctx: RunContext, on_epoch=None) -> TrainedAdapter:
    """Attach the adapter to the frozen causal LM, train on responses only, save only the adapter (+ manifest)."""
    cfg = ctx.config
    if cfg.training.processes > 1:
        raise InputError("training.processes > 1 is supported for model.task sequence_classification only; set "
                         "training.processes: 1 for causal_lm")
    seed_everything(cfg.training.seed)
    tokenizer = lm.prepare_tokenizer(load_tokenizer(ctx.base, cfg.model))
    model = wrap_with_peft(lm.load_causal_lm(ctx.base.path, cfg.model), cfg.peft, "causal_lm", [])
    trainable, total = count_parameters(model)
    s, n = ctx.splits, cfg.model.max_length
    train_enc = lm.encode_pairs(tokenizer, list(s.train[lm.PROMPT]), list(s.train[lm.RESPONSE]), n)
    val_enc = lm.encode_pairs(tokenizer, list(s.validation[lm.PROMPT]), list(s.validation[lm.RESPONSE]), n)

    def validate(m) -> dict[str, float]:
        ppl = lm.perplexity(m, val_enc, tokenizer.pad_token_id, cfg.training.eval_batch_size)
        return {"val_loss": float(math.log(ppl)), "val_perplexity": ppl}

    stats = train(model, train_enc, val_enc, tokenizer.pad_token_id, cfg.training, on_epoch=on_epoch,
                  collate_fn=lm.lm_collate, validate=validate)
    adapter_dir = ctx.workdir / ARTIFACT_ADAPTER
    metadata = {"task": "causal_lm", "labels": [], "max_length": n, "max_new_tokens": cfg.model.max_new_tokens,
                "peft": cfg.peft.model_dump(mode="json"), "base_model": ctx.base.to_dict(),
                "dataset_digest": s.digest, "trust_remote_code": cfg.model.trust_remote_code}
    digest = adapter_io.save_adapter(model, adapter_dir, metadata)
    return TrainedAdapter(model=model, tokenizer=tokenizer, adapter_dir=adapter_dir, digest=digest,
                          size_bytes=adapter_io.dir_size(adapter_dir), trainable_params=trainable, total_params=total,
                          stats=stats, max_length=n, batch_size=cfg.training.eval_batch_size)


def champion_metrics(model_name: str, splits: DatasetSplits, batch_size: int) -> LMChampion | None:
    """The approved champion (through the verified loader) scored by exact match on this test split."""
    from tasks.loader import LoadRefused, load_verified

    mv = registry.version_by_alias(registry.client(), model_name, ALIAS_CHAMPION)
    if mv is None:
        return None
    try:
        loaded = load_verified(f"{model_name}/{mv.version}")
    except LoadRefused as err:
        return LMChampion(str(mv.version), {}, [f"champion v{mv.version} could not be loaded: {err.report.reason}"])
    preds = loaded.generate([str(p) for p in splits.test[lm.PROMPT]], batch_size=batch_size)
    return LMChampion(str(mv.version), lm.generation_metrics(preds, [str(r) for r in splits.test[lm.RESPONSE]]))


# --- thin tasks -------------------------------------------------------------------------------------------------


@step(name="load-data")
def load_lm_data(config: Config) -> DatasetSplits:
    return lm.load_lm_splits(config.data)


@step(name="train-adapter")
def train_lm_adapter(ctx: RunContext) -> TrainedAdapter:
    c = registry.client()

    def on_epoch(epoch: int, record: dict[str, float]) -> None:
        registry.log_metrics(c, ctx.run_id, {k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "training"})
    trained = train_lm(ctx, on_epoch)
    registry.log_metrics(c, ctx.run_id, {"train_seconds": trained.stats.seconds,
                                         "train_tokens_per_second": trained.stats.tokens_per_second,
                                         "trainable_params": trained.trainable_params,
                                         "adapter_bytes": trained.size_bytes})
    return trained


@step(name="evaluate")
def evaluate_lm_adapter(ctx: RunContext, trained: TrainedAdapter) -> lm.LMEvaluation:
    cfg = ctx.config
    ev = lm.evaluate_lm(trained.model, trained.tokenizer, ctx.splits, cfg.model.max_length, cfg.model.max_new_tokens,
                        cfg.training.eval_batch_size)
    registry.log_metrics(registry.client(), ctx.run_id, ev.summary_metrics())
    out = ctx.workdir / ARTIFACT_REPORTS
    reports.write_json(out / "evaluation.json", {"metrics": ev.metrics, "examples": ev.examples})
    reports.write_text(out / "evaluation.md", lm.evaluation_markdown(ev))
    return ev


@step(name="evaluate-champion")
def evaluate_lm_champion(ctx: RunContext) -> LMChampion | None:
    champion = champion_metrics(ctx.config.registry.model_name, ctx.splits, ctx.config.training.eval_batch_size)
    if champion is not None:
        c = registry.client()
        registry.set_run_tags(c, ctx.run_id, {RUN_TAG_CHAMPION: champion.version})
        if champion.usable:
            registry.log_metrics(c, ctx.run_id, {"champion_test_exact_match": champion.test_metrics["exact_match"]})
    return champion


@step(name="bias-gate")
def lm_bias_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: lm.LMEvaluation,
                 champion: LMChampion | None) -> GateDecision:
    score = sentence_scorer(trained.model, trained.tokenizer, trained.max_length, trained.batch_size)
    return _log_gate(ctx, run_stereotype_probe(score, ctx.config.gates.bias))


@step(name="regression-gate")
def lm_regression_gate_step(ctx: RunContext, trained: TrainedAdapter, evaluation: lm.LMEvaluation,
                            champion: LMChampion | None) -> GateDecision:
    cfg = ctx.config
    texts = general_texts(cfg.gates.regression.general_text_path, cfg.gates.regression.max_general_texts)
    candidate = text_perplexity(trained.model, trained.tokenizer, texts, trained.max_length, trained.batch_size)
    base_model = lm.load_causal_lm(ctx.base.path, cfg.model)  # the untouched base, whatever the adapter method
    base = text_perplexity(base_model, trained.tokenizer, texts, trained.max_length, trained.batch_size)
    del base_model
    usable = champion is not None and champion.usable
    decision = lm_regression_gate(candidate, base, evaluation.metrics["test"],
                                  champion.test_metrics if usable else None, cfg.gates.regression,
                                  notes=champion.notes if champion is not None else None)
    return _log_gate(ctx, decision)


# --- which steps a task runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSteps:
    """The task-specific steps of ``train_adapter``; validation, registration and the summary are shared."""

    load_data: Callable
    train: Callable
    evaluate: Callable
    evaluate_champion: Callable
    bias_gate: Callable
    regression_gate: Callable


TASK_STEPS: dict[str, TaskSteps] = {
    "sequence_classification": TaskSteps(load_data, train_adapter, evaluate_adapter, evaluate_champion, bias_gate,
                                         regression_gate),
    "causal_lm": TaskSteps(load_lm_data, train_lm_adapter, evaluate_lm_adapter, evaluate_lm_champion, lm_bias_gate,
                           lm_regression_gate_step),
}


def steps_for(task: str) -> TaskSteps:
    return TASK_STEPS[task]
