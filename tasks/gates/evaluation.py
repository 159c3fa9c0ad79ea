"""Evaluate a trained classifier on the splits: the metrics every gate and report reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


from tasks.data.splits import GROUP, LABEL, TEXT, DatasetSplits
from tasks.core.predictions import Predictions
from tasks.core.metrics import classification_metrics, metrics_of
from tasks.training.loop import predict_proba

TRAIN_EVAL_CAP = 1000  # rows of the training split scored for the overfitting check


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, Any]]  # split -> classification_metrics(...)
    test: Predictions
    headline: str = "macro_f1"  # the test metric a version's description and registration evidence name
    texts_scored: int = 0  # how many texts the evaluation ran through the model (every split it scored)

    def headline_metric(self) -> tuple[str, float]:
        return self.headline, float(self.metrics["test"][self.headline] or 0.0)

    def summary_metrics(self) -> dict[str, float]:
        """The run summary's metrics (the CLI prints test accuracy and macro-F1)."""
        test = self.metrics["test"]
        return {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
                **{f"{k}_macro_f1": m["macro_f1"] for k, m in self.metrics.items() if k != "test"}}


def predictions_for(model, tokenizer, frame, labels: list[str], max_length: int, batch_size: int) -> Predictions:
    texts = [str(t) for t in frame[TEXT]]
    proba = predict_proba(model, tokenizer, texts, max_length, batch_size)
    return Predictions(
        labels=list(labels),
        y_true=[str(y) for y in frame[LABEL]],
        y_pred=[labels[i] for i in proba.argmax(axis=1)],
        proba=proba,
        groups=[str(g) for g in frame[GROUP]] if GROUP in frame.columns else None,
        texts=texts,
    )


def evaluate(model, tokenizer, splits: DatasetSplits, max_length: int, batch_size: int) -> Evaluation:
    """Test metrics (the headline), plus validation and (capped) train metrics for the overfitting check."""
    labels = splits.labels
    metrics: dict[str, dict[str, Any]] = {}
    test = predictions_for(model, tokenizer, splits.test, labels, max_length, batch_size)
    metrics["test"], scored = metrics_of(test), len(splits.test)
    for name, frame in (("validation", splits.validation), ("train", splits.train.head(TRAIN_EVAL_CAP))):
        if len(frame):
            p = predictions_for(model, tokenizer, frame, labels, max_length, batch_size)
            metrics[name], scored = classification_metrics(p.y_true, p.y_pred, labels), scored + len(frame)
    return Evaluation(metrics=metrics, test=test, texts_scored=scored)
