"""The bias and regression gates as the main flow runs them: candidate, champion and baselines on the same data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.gates.baselines import evaluate_baselines, fit_baselines
from tasks.gates.bias import bias_gate
from tasks.core.config import BiasGateConfig, Config
from tasks.data.splits import GROUP, LABEL, TEXT, DatasetSplits, load_labelled_file
from tasks.gates.decision import GateDecision, unloadable_champion_checks
from tasks.gates.evaluation import Evaluation
from tasks.core.predictions import PredictFn, Predictions
from tasks.gates.regression import metrics_of, regression_gate


@dataclass
class ChampionEvidence:
    """The current champion, measured on the candidate's test split (and golden set), plus its own bias record."""

    version: str
    labels: list[str]
    test_metrics: dict[str, Any]
    bias_details: dict[str, Any] | None
    predict: PredictFn | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return bool(self.test_metrics)


def champion_evidence(version: str, labels: list[str], predict: PredictFn, splits: DatasetSplits,
                      bias_details: dict[str, Any] | None) -> ChampionEvidence:
    """The loaded champion scored on the candidate's test split, with its own bias record (None if it has none)."""
    texts = [str(t) for t in splits.test[TEXT]]
    test_pred = Predictions.from_proba(labels, [str(y) for y in splits.test[LABEL]], predict(texts),
                                       groups=[str(g) for g in splits.test[GROUP]] if GROUP in splits.test else None)
    return ChampionEvidence(version=version, labels=labels, test_metrics=metrics_of(test_pred),
                            bias_details=bias_details, predict=predict)


def unloadable_champion(version: str, note: str) -> ChampionEvidence:
    """A champion that could not be loaded: reported (``notes``), never compared against."""
    return ChampionEvidence(version=version, labels=[], test_metrics={}, bias_details=None, notes=[note])


def run_bias_gate(evaluation: Evaluation, cfg: BiasGateConfig, predict: PredictFn,
                  champion: ChampionEvidence | None) -> GateDecision:
    decision = bias_gate(evaluation.test, cfg, predict_fn=predict,  # evaluation.test: this model's predictions
                         champion=champion.bias_details if champion and champion.usable else None,
                         predicted_by_model=True)
    return decision.with_checks(unloadable_champion_checks(champion.notes if champion is not None else []))


def score(predict: PredictFn, labels: list[str], texts: list[str], y_true: list[str]) -> dict[str, Any]:
    """classification_metrics of a model given as a predict function."""
    return metrics_of(Predictions.from_proba(labels, y_true, predict(texts)))


def run_regression_gate(splits: DatasetSplits, evaluation: Evaluation, config: Config, predict: PredictFn,
                        champion: ChampionEvidence | None) -> GateDecision:
    cfg = config.gates.regression
    notes = champion.notes if champion is not None else []
    test_texts = [str(t) for t in splits.test[TEXT]]
    test_labels = [str(y) for y in splits.test[LABEL]]
    fitted = fit_baselines([str(t) for t in splits.train[TEXT]], [str(y) for y in splits.train[LABEL]],
                           names=list(cfg.baselines), seed=config.training.seed)
    baselines = evaluate_baselines(fitted, test_texts, test_labels, splits.labels)
    if champion is not None and not champion.usable:
        champion = None  # reported below, never compared against
    golden = None
    if cfg.golden_path:
        frame = load_labelled_file(cfg.golden_path, config.data)
        texts, y = [str(t) for t in frame[TEXT]], [str(v) for v in frame[LABEL]]
        golden = {"candidate": score(predict, splits.labels, texts, y),
                  "champion": score(champion.predict, champion.labels, texts, y)
                  if champion is not None and champion.predict is not None else None}
    decision = regression_gate(
        evaluation.metrics["test"], champion.test_metrics if champion else None, baselines,
        evaluation.metrics.get("train"), evaluation.metrics.get("validation"), cfg, golden=golden,
    )
    return decision.with_checks(unloadable_champion_checks(notes))



