"""``train_adapter``'s steps for ``model.task: causal_lm`` (thin Prefect tasks over plain functions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tasks.core.config import Config
from tasks.core.errors import InputError
from tasks.core.names import ARTIFACT_ADAPTER, ARTIFACT_REPORTS
from tasks.data.lm import PROMPT, RESPONSE, load_lm_splits
from tasks.data.splits import DatasetSplits
from tasks.gates import reports
from tasks.gates.decision import GateDecision
from tasks.gates.lm_evaluation import LMEvaluation, evaluate_lm, evaluation_markdown, generation_metrics
from tasks.gates.lm_probe import lm_regression_gate, run_stereotype_probe
from tasks.governance import registry
from tasks.training.comparison import peak_memory
from tasks.steps.common import (RunContext, load_run_champion, log_gate, log_trained, start_training, step,
                                step_losses)
from tasks.steps.kinds import TaskSteps
from tasks.training import causal_lm as lm
from tasks.training.recipe import TrainedAdapter, train_adapter

GENERAL_TEXT = Path(__file__).resolve().parents[2] / "examples" / "general_text.txt"


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


# --- thin tasks -------------------------------------------------------------------------------------------------


@step(name="load-data")
def load_lm_data(config: Config) -> DatasetSplits:
    return load_lm_splits(config.data)


@step(name="train-adapter")
def train_lm_adapter(ctx: RunContext) -> TrainedAdapter:
    """Attach the adapter to the frozen causal LM, train on responses only, save only the adapter (+ manifest)."""
    if ctx.config.training.processes > 1:
        raise InputError("training.processes > 1 is supported for model.task sequence_classification only; set "
                         "training.processes: 1 for causal_lm")
    on_epoch = start_training(ctx)
    with peak_memory() as mem:
        trained = train_adapter(ctx.job(), ctx.splits.train, ctx.splits.validation, ctx.workdir / ARTIFACT_ADAPTER,
                                on_epoch, on_step=step_losses(ctx))
    return log_trained(ctx, trained, mem["peak_mib"])


@step(name="evaluate")
def evaluate_lm_adapter(ctx: RunContext, trained: TrainedAdapter) -> LMEvaluation:
    cfg = ctx.config
    ev = evaluate_lm(trained.model, trained.tokenizer, ctx.splits, cfg.model.max_length, cfg.model.max_new_tokens,
                     cfg.training.eval_batch_size)
    registry.log_metrics(registry.client(), ctx.run_id, ev.summary_metrics())
    out = ctx.workdir / ARTIFACT_REPORTS
    reports.write_json(out / "evaluation.json", {"metrics": ev.metrics, "examples": ev.examples})
    reports.write_text(out / "evaluation.md", evaluation_markdown(ev))
    return ev


@step(name="evaluate-champion")
def evaluate_lm_champion(ctx: RunContext) -> LMChampion | None:
    """The approved champion (through the verified loader) scored by exact match on this test split."""
    champ = load_run_champion(ctx)
    if champ is None:
        return None
    if champ.loaded is None:
        return LMChampion(champ.version, {}, [champ.note])
    test = ctx.splits.test
    preds = champ.loaded.generate([str(p) for p in test[PROMPT]], batch_size=ctx.config.training.eval_batch_size)
    champion = LMChampion(champ.version, generation_metrics(preds, [str(r) for r in test[RESPONSE]]))
    registry.log_metrics(registry.client(), ctx.run_id, {"champion_test_exact_match": champion.test_metrics["exact_match"]})
    return champion


@step(name="bias-gate")
def lm_bias_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: LMEvaluation,
                 champion: LMChampion | None) -> GateDecision:
    score = sentence_scorer(trained.model, trained.tokenizer, trained.max_length, trained.batch_size)
    return log_gate(ctx, run_stereotype_probe(score, ctx.config.gates.bias))


@step(name="regression-gate")
def lm_regression_gate_step(ctx: RunContext, trained: TrainedAdapter, evaluation: LMEvaluation,
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
    return log_gate(ctx, decision)


#: The ``TaskSteps`` of causal-LM instruction tuning: prompt -> response.
CAUSAL_LM: TaskSteps[LMEvaluation, LMChampion] = TaskSteps(
    load_data=load_lm_data, train=train_lm_adapter, evaluate=evaluate_lm_adapter,
    evaluate_champion=evaluate_lm_champion, bias_gate=lm_bias_gate, regression_gate=lm_regression_gate_step)
