"""The bias and regression gates as the main flow runs them: candidate, champion and baselines on the same data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.baselines import evaluate_baselines, fit_baselines
from tasks.bias import bias_gate
from tasks.config import BiasGateConfig, Config
from tasks import registry, state
from tasks.data import GROUP, LABEL, TEXT, DatasetSplits, load_labelled_file
from tasks.decision import Check, GateDecision
from tasks.evaluation import Evaluation, predict_proba
from tasks.names import ALIAS_CHAMPION, ARTIFACT_REPORTS
from tasks.predictions import PredictFn, Predictions
from tasks.regression import metrics_of, regression_gate


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


def _champion_bias_record(run_id: str) -> dict[str, Any] | None:
    """The ``details`` of the champion's own bias decision (its run's ``reports/bias.json``)."""
    import json
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="adaptrail-champion-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{ARTIFACT_REPORTS}/bias.json",
                                                       dst_path=tmp, tracking_uri=state.tracking_uri())
        except Exception:  # a champion registered before the bias gate existed
            return None
        return json.loads(Path(path).read_text(encoding="utf-8")).get("details")


def load_champion(model_name: str, splits: DatasetSplits, batch_size: int) -> ChampionEvidence | None:
    """The ``champion`` version scored on the candidate's test split; None when there is no champion yet.

    It is loaded only through the verified loader: a champion whose adapter or base digest does not match its
    tags is not compared against but reported (``notes``), never used silently.
    """
    from tasks.loader import LoadRefused, load_verified

    c = registry.client()
    mv = registry.version_by_alias(c, model_name, ALIAS_CHAMPION)
    if mv is None:
        return None
    try:
        loaded = load_verified(f"{model_name}/{mv.version}")
    except LoadRefused as err:
        return ChampionEvidence(version=str(mv.version), labels=[], test_metrics={}, bias_details=None,
                                notes=[f"champion v{mv.version} could not be loaded: {err.report.reason}"])

    def predict(texts: list[str]):
        return predict_proba(loaded.model, loaded.tokenizer, texts, loaded.max_length, batch_size)

    texts = [str(t) for t in splits.test[TEXT]]
    test_pred = Predictions.from_proba(loaded.labels, [str(y) for y in splits.test[LABEL]], predict(texts),
                                       groups=[str(g) for g in splits.test[GROUP]] if GROUP in splits.test else None)
    return ChampionEvidence(version=str(mv.version), labels=loaded.labels, test_metrics=metrics_of(test_pred),
                            bias_details=_champion_bias_record(mv.run_id), predict=predict)


def run_bias_gate(evaluation: Evaluation, cfg: BiasGateConfig, predict: PredictFn,
                  champion: ChampionEvidence | None) -> GateDecision:
    return bias_gate(evaluation.test, cfg, predict_fn=predict,
                     champion=champion.bias_details if champion and champion.usable else None)


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
    for note in notes:
        decision.checks.append(Check(name="champion available", passed=False, judged=False, detail=note))
    return decision



