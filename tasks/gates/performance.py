"""Accuracy and macro-F1 of a labelled batch with bootstrap intervals — overall, per class and per group — and the
checks that compare them with the reference the version was approved on. Pure numpy (resampling weights, so 1,000
resamples of 10,000 rows take well under a second)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks.gates.decision import Check


def _cells(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lab = np.array(labels, dtype=object)
    return ((y_true[:, None] == lab[None, :]).astype(float), (y_pred[:, None] == lab[None, :]).astype(float))


def _scores(w: np.ndarray, t: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 and per-class recall / F1 for each row of weights ``w`` (resamples x rows)."""
    n = w.sum(axis=1)
    tp, true, pred = w @ (t * p), w @ t, w @ p
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(true + pred > 0, 2 * tp / (true + pred), np.nan)
        recall = np.where(true > 0, tp / true, np.nan)
        macro = np.nanmean(np.where(true + pred > 0, f1, np.nan), axis=1)
    return {"accuracy": tp.sum(axis=1) / n, "macro_f1": macro, "recall": recall, "f1": f1, "n": true}


def _interval(samples: np.ndarray, confidence: float) -> list[float | None]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return [None, None]
    a = (1 - confidence) / 2
    return [round(float(np.quantile(s, a)), 4), round(float(np.quantile(s, 1 - a)), 4)]


def _num(x: Any) -> float | None:
    return round(float(x), 4) if x is not None and np.isfinite(x) else None


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)


def scores(y_true: list[str], y_pred: list[str], labels: list[str], n_boot: int = 500, seed: int = 0,
           confidence: float = 0.95) -> dict[str, Any]:
    """Point estimates and percentile bootstrap intervals (rows resampled) of accuracy, macro-F1, and per class
    recall and F1; ``samples`` holds the resampled accuracy and macro-F1 (for :func:`performance_checks`)."""
    yt, yp = np.array(y_true, dtype=object), np.array(y_pred, dtype=object)
    t, p = _cells(yt, yp, labels)
    point = _scores(np.ones((1, len(yt))), t, p)
    boot = _scores(_resample(len(yt), n_boot, seed), t, p)
    out: dict[str, Any] = {"n": len(yt), "samples": {k: boot[k] for k in ("accuracy", "macro_f1")}}
    for k in ("accuracy", "macro_f1"):
        out[k] = {"value": _num(point[k][0]), "ci": _interval(boot[k], confidence)}
    out["per_class"] = {lab: {"n": int(point["n"][0, j]), "recall": _num(point["recall"][0, j]),
                              "recall_ci": _interval(boot["recall"][:, j], confidence),
                              "f1": _num(point["f1"][0, j])} for j, lab in enumerate(labels)}
    return out


def group_scores(y_true: list[str], y_pred: list[str], groups: list[str], labels: list[str], min_rows: int,
                 n_boot: int = 500, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per group: accuracy and macro-F1 with intervals; groups under ``min_rows`` are listed with their size only."""
    g = np.array(groups, dtype=object)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(groups)):
        m = g == name
        n = int(m.sum())
        if n < min_rows:
            out[str(name)] = {"n": n, "judged": False, "note": f"n={n} < {min_rows}: too few rows to say"}
            continue
        s = scores([y for y, k in zip(y_true, m) if k], [y for y, k in zip(y_pred, m) if k], labels, n_boot, seed)
        out[str(name)] = {"n": n, "judged": True, "accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}
    return out


def performance_checks(reference: dict[str, Any], batch: dict[str, Any], thresholds: dict[str, Any],
                       confidence: float = 0.95) -> list[Check]:
    """Accuracy and macro-F1 of the batch against the reference's (both from :func:`scores`): a breach is a drop
    beyond the threshold whose bootstrap interval (both sides resampled) lies wholly above zero — the batch is
    worse, not just noisier than the reference's own few hundred rows."""
    checks = []
    for metric, key in (("accuracy", "max_accuracy_drop"), ("macro_f1", "max_macro_f1_drop")):
        ref, cur = reference[metric]["value"], batch[metric]["value"]
        if ref is None or cur is None:
            checks.append(Check(f"performance: {metric}", True, cur, None, "not defined on this batch", judged=False))
            continue
        lo, hi = _interval(reference["samples"][metric] - batch["samples"][metric], confidence)
        drop, limit = ref - cur, float(thresholds[key])
        breach = drop > limit and lo is not None and lo > 0
        checks.append(Check(f"performance: {metric}", not breach, round(drop, 4), limit,
                            f"{metric} {cur:.3f} vs {ref:.3f} on the reference: drop {drop:+.3f} (max {limit}; "
                            f"95% interval of the drop {lo} to {hi})"))
    return checks


def public(s: dict[str, Any]) -> dict[str, Any]:
    """:func:`scores` without its resamples (what reports keep)."""
    return {k: v for k, v in s.items() if k != "samples"}
