"""``train_adapter``'s steps for ``model.task: sequence_classification`` (thin Prefect tasks over plain functions)."""

from __future__ import annotations

import time

from tasks.core.config import Config
from tasks.core.names import ARTIFACT_ADAPTER, ARTIFACT_REPORTS
from tasks.data.splits import DatasetSplits, load_dataset_splits
from tasks.gates import classification as gates
from tasks.gates import reports
from tasks.gates.classification import ChampionEvidence
from tasks.gates.decision import GateDecision
from tasks.gates.evaluation import Evaluation, evaluate
from tasks.governance import registry
from tasks.steps.common import (RunContext, TimedScoring, load_run_champion, log_gate, log_scoring, log_trained,
                                start_training, step, step_losses)
from tasks.steps.kinds import TaskSteps
from tasks.training.comparison import peak_memory
from tasks.training.loop import predict_proba
from tasks.training.recipe import TrainedAdapter, train_adapter


@step(name="load-data")
def load_data(config: Config) -> DatasetSplits:
    return load_dataset_splits(config.data)


@step(name="train-adapter")
def train(ctx: RunContext) -> TrainedAdapter:
    """Attach the adapter to the frozen base, train it, save only the adapter (+ manifest)."""
    if ctx.config.training.processes > 1:  # several ranks under torchrun; returns the same TrainedAdapter
        from tasks.steps.distributed import train_distributed
        return train_distributed(ctx)
    if ctx.config.training.search.trials:  # a few trials in child runs; the best one's adapter is the run's
        from tasks.steps.search import search_and_train
        return search_and_train(ctx)
    on_epoch = start_training(ctx)
    with peak_memory() as mem:
        trained = train_adapter(ctx.job(), ctx.splits.train, ctx.splits.validation, ctx.workdir / ARTIFACT_ADAPTER,
                                on_epoch, on_step=step_losses(ctx))
    return log_trained(ctx, trained, mem["peak_mib"])


@step(name="evaluate")
def evaluate_adapter(ctx: RunContext, trained: TrainedAdapter) -> Evaluation:
    cfg, splits = ctx.config, ctx.splits
    start = time.perf_counter()
    ev = evaluate(trained.model, trained.tokenizer, splits, cfg.model.max_length, cfg.training.eval_batch_size)
    log_scoring(ctx, "evaluate", ev.texts_scored, time.perf_counter() - start)
    flat: dict[str, float] = {}
    for split, m in ev.metrics.items():
        flat[f"{split}_accuracy"] = m["accuracy"]
        flat[f"{split}_macro_f1"] = m["macro_f1"]
    for label, pc in ev.metrics["test"]["per_class"].items():
        for k in ("precision", "recall", "f1"):
            flat[registry.metric_key("test", k, label)] = pc[k]
    registry.log_metrics(registry.client(), ctx.run_id, flat)
    out = ctx.workdir / ARTIFACT_REPORTS
    reports.write_json(out / "evaluation.json", ev.metrics)
    reports.write_text(out / "evaluation.md", reports.evaluation_markdown(ev.metrics, ctx.splits.labels))
    return ev


@step(name="evaluate-champion")
def evaluate_champion(ctx: RunContext) -> ChampionEvidence | None:
    """The current champion (if any), loaded through the verified loader and scored on this run's test split."""
    champ = load_run_champion(ctx)
    if champ is None:
        return None
    c = registry.client()
    if champ.loaded is None:
        return gates.unloadable_champion(champ.version, champ.note)
    loaded, batch = champ.loaded, ctx.config.training.eval_batch_size

    def predict(texts: list[str]):
        return predict_proba(loaded.model, loaded.tokenizer, texts, loaded.max_length, batch)

    bias_record = registry.read_run_json(c, champ.run_id, f"{ARTIFACT_REPORTS}/bias.json") if champ.run_id else None
    timed = TimedScoring(predict)
    evidence = gates.champion_evidence(champ.version, loaded.labels, timed, ctx.splits,
                                       bias_record.get("details") if bias_record else None)
    log_scoring(ctx, "champion", timed.texts, timed.seconds)
    registry.log_metrics(c, ctx.run_id, {f"champion_test_{k}": evidence.test_metrics[k]
                                         for k in ("accuracy", "macro_f1")})
    return evidence


@step(name="bias-gate")
def bias_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation,
              champion: ChampionEvidence | None) -> GateDecision:
    timed = TimedScoring(trained.predict)  # the counterfactual swaps are scored by the candidate
    decision = gates.run_bias_gate(evaluation, ctx.config.gates.bias, timed, champion)
    log_scoring(ctx, "bias_gate", timed.texts, timed.seconds)
    return log_gate(ctx, decision)


@step(name="regression-gate")
def regression_gate(ctx: RunContext, trained: TrainedAdapter, evaluation: Evaluation,
                    champion: ChampionEvidence | None) -> GateDecision:
    return log_gate(ctx, gates.run_regression_gate(ctx.splits, evaluation, ctx.config, trained.predict, champion))


#: The ``TaskSteps`` of sequence classification: text -> label.
CLASSIFICATION: TaskSteps[Evaluation, ChampionEvidence] = TaskSteps(
    load_data=load_data, train=train, evaluate=evaluate_adapter, evaluate_champion=evaluate_champion,
    bias_gate=bias_gate, regression_gate=regression_gate)
