"""What a model predicted on a split: the input of the evaluation, bias and regression code (no model needed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tasks.core.errors import InputError

#: texts -> probabilities (n, k), columns in the model's ``labels`` order.
PredictFn = Callable[[list[str]], np.ndarray]


@dataclass
class Predictions:
    """Predictions on one split. ``labels`` is the column order of ``proba`` (the classes the model knows)."""

    labels: list[str]
    y_true: list[str]
    y_pred: list[str]
    proba: np.ndarray
    groups: list[str] | None = None
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = [str(x) for x in self.labels]
        self.y_true = [str(x) for x in self.y_true]
        self.y_pred = [str(x) for x in self.y_pred]
        self.proba = np.asarray(self.proba, dtype=float)
        n, k = len(self.y_true), len(self.labels)
        if k < 2 or len(set(self.labels)) != k:
            raise InputError(f"predictions need at least two distinct labels (got {self.labels})")
        if len(self.y_pred) != n or self.proba.shape != (n, k):
            raise InputError(f"predictions disagree in size: {n} true labels, {len(self.y_pred)} predicted, "
                             f"proba shape {self.proba.shape} (expected ({n}, {k})); predict on the same rows")
        unknown = sorted(set(self.y_pred) - set(self.labels))
        if unknown:
            raise InputError(f"predicted labels {unknown[:5]} are not among the model's labels {self.labels}")
        for name in ("groups", "texts"):
            col = getattr(self, name)
            if col is not None:
                if len(col) != n:
                    raise InputError(f"predictions.{name} has {len(col)} rows, expected {n}")
                setattr(self, name, [str(x) for x in col])

    @classmethod
    def from_proba(cls, labels: list[str], y_true: list[str], proba: np.ndarray, groups: list[str] | None = None,
                   texts: list[str] | None = None) -> "Predictions":
        """The predicted label is the most probable column."""
        proba = np.asarray(proba, dtype=float)
        y_pred = [str(labels[i]) for i in proba.argmax(axis=1)] if proba.ndim == 2 else []
        return cls(labels=list(labels), y_true=list(y_true), y_pred=y_pred, proba=proba, groups=groups, texts=texts)

    def __len__(self) -> int:
        return len(self.y_true)
