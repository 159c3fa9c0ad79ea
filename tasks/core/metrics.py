"""Classification metrics: the one place they are computed (training's validation, evaluation, gates, the audit)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from tasks.core.errors import InputError
from tasks.core.predictions import Predictions


def round6(x: float) -> float | None:
    """Rounded to 6 places for reports; None for NaN/inf."""
    return round(float(x), 6) if np.isfinite(x) else None


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``successes`` of ``n``): unlike the normal approximation it stays
    inside [0, 1] and is sound for small ``n`` and rates near 0 — the counterfactual flip rate's usual case."""
    if n <= 0:
        raise InputError("a proportion needs at least one trial")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p, z2 = successes / n, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str],
                           groups: list[str] | None = None) -> dict[str, Any]:
    """accuracy, macro/weighted F1, per-class precision/recall/F1, confusion matrix (rows true, columns predicted).

    ``labels`` are the classes the model knows. True labels outside them count as errors and are listed under
    ``unknown_true_labels``; a class with no true and no predicted rows is undefined (None) and left out of the
    macro averages. With ``groups``, accuracy and macro F1 per group are added.
    """
    y_true, y_pred, labels = [str(y) for y in y_true], [str(y) for y in y_pred], [str(c) for c in labels]
    if len(y_true) != len(y_pred) or not y_true:
        raise InputError(f"metrics need as many predictions as true labels, at least one ({len(y_true)} true, "
                         f"{len(y_pred)} predicted)")
    if len(set(labels)) != len(labels) or not labels:
        raise InputError(f"labels must be distinct and non-empty (got {labels})")
    known = set(labels)
    foreign = sorted(set(y_pred) - known)
    if foreign:
        raise InputError(f"predicted labels {foreign[:5]} are not among the model's labels {labels}")
    prec, rec, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=np.nan)
    predicted = np.array([y_pred.count(c) for c in labels])
    defined = (support > 0) | (predicted > 0)
    prec, rec, f1 = (np.where(defined, np.nan_to_num(a, nan=0.0), np.nan) for a in (prec, rec, f1))
    rec = np.where(support > 0, rec, np.nan)  # recall needs true rows
    weights = support[defined]
    out: dict[str, Any] = {
        "labels": labels,
        "n": len(y_true),
        "accuracy": round6(np.mean(np.array(y_true) == np.array(y_pred))),
        "macro_f1": round6(np.mean(f1[defined])) if defined.any() else None,
        "weighted_f1": round6(np.average(f1[defined], weights=weights)) if weights.sum() > 0 else None,
        "macro_precision": round6(np.mean(prec[defined])) if defined.any() else None,
        "macro_recall": round6(np.nanmean(rec)) if (support > 0).any() else None,
        "per_class": {c: {"precision": round6(prec[i]), "recall": round6(rec[i]), "f1": round6(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(labels)},
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
        "unknown_true_labels": dict(sorted(Counter(y for y in y_true if y not in known).items())),
    }
    if groups is not None:
        if len(groups) != len(y_true):
            raise InputError(f"groups has {len(groups)} rows, expected {len(y_true)}")
        g = np.array([str(x) for x in groups], dtype=object)
        out["per_group"] = {}
        for name in sorted(set(g)):
            m = g == name
            sub = classification_metrics(list(np.array(y_true)[m]), list(np.array(y_pred)[m]), labels)
            out["per_group"][name] = {"n": int(m.sum()), "accuracy": sub["accuracy"], "macro_f1": sub["macro_f1"]}
    return out


def metrics_of(pred: Predictions) -> dict[str, Any]:
    """``classification_metrics`` of a ``Predictions`` (groups included when present)."""
    return classification_metrics(pred.y_true, pred.y_pred, pred.labels, pred.groups)
