"""The bias gate: group fairness metrics (fairlearn), counterfactual identity-term swaps, and the champion's record.

Gaps are judged on bootstrap confidence bounds by default (``gates.bias.judge_on``): a gap fails only when the
whole interval is beyond the threshold, so a reviewer is not asked to reject a model for noise.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
from fairlearn.metrics import MetricFrame, count, selection_rate
from sklearn.metrics import accuracy_score

from tasks.core.config import BiasGateConfig
from tasks.gates.counterfactual import counterfactual_test
from tasks.gates.decision import Check, GateDecision
from tasks.core.errors import InputError
from tasks.core.names import GateOutcome
from tasks.core.predictions import PredictFn, Predictions

GATE = "bias"
#: metrics of ``details["summary"]`` and whether higher is better (used for the champion comparison).
SUMMARY_DIRECTION: dict[str, bool] = {
    "disparate_impact_ratio": True,
    "equalized_odds_difference": False,
    "accuracy_gap": False,
    "counterfactual_flip_rate": False,
    "counterfactual_mean_prob_change": False,
}
_GAP_THRESHOLDS = {  # metric -> (config field, higher is better)
    "disparate_impact_ratio": ("min_disparate_impact_ratio", True),
    "equalized_odds_difference": ("max_equalized_odds_difference", False),
    "accuracy_gap": ("max_accuracy_gap", False),
}


# --- group metrics ---------------------------------------------------------------------------------------------

def _rate_given_true(y_true: np.ndarray, y_pred: np.ndarray, *, cls: str, true_is_cls: bool) -> float:
    """TPR (true_is_cls) or FPR of one class, one-vs-rest; NaN when the group has no rows to condition on."""
    mask = (y_true == cls) if true_is_cls else (y_true != cls)
    return float(np.mean(y_pred[mask] == cls)) if mask.any() else float("nan")


def _frame_metrics(labels: list[str]) -> dict[str, Any]:
    metrics: dict[str, Any] = {"n": count, "accuracy": accuracy_score}
    for c in labels:
        metrics[f"sel[{c}]"] = functools.partial(selection_rate, pos_label=c)
        metrics[f"tpr[{c}]"] = functools.partial(_rate_given_true, cls=c, true_is_cls=True)
        metrics[f"fpr[{c}]"] = functools.partial(_rate_given_true, cls=c, true_is_cls=False)
    return metrics


def _spread(x: np.ndarray, axis: int) -> np.ndarray:
    """max - min along ``axis`` ignoring NaN; NaN where fewer than two values are defined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmax(x, axis=axis) - np.nanmin(x, axis=axis)
    return np.where((~np.isnan(x)).sum(axis=axis) >= 2, out, np.nan)


def _gap_stats(sel: np.ndarray, acc: np.ndarray, tpr: np.ndarray, fpr: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class and overall gaps across groups. Shapes: rates (B, G, k), acc (B, G); results (B, k) / (B,)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hi, lo = np.nanmax(sel, axis=1), np.nanmin(sel, axis=1)
        di = np.where((hi > 0) & (sel.shape[1] >= 2), lo / np.where(hi > 0, hi, 1.0), np.nan)
    eo = np.fmax(_spread(tpr, axis=1), _spread(fpr, axis=1))
    return {"disparate_impact_ratio": di, "equalized_odds_difference": eo, "accuracy_gap": _spread(acc, axis=1)}


def _worst(per_class: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """The judged statistic: the worst class per resample (NaN classes ignored)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(per_class, axis=-1) if higher_is_better else np.nanmax(per_class, axis=-1)


def _bootstrap(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, judged: list[str], labels: list[str],
               n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Resample rows within each group (sizes kept) and recompute the gaps; returns (n_boot, ...) arrays."""
    rng = np.random.default_rng(seed)
    lab = np.array(labels, dtype=object)
    sel, acc, tpr, fpr = [], [], [], []
    for g in judged:
        m = groups == g
        t = (y_true[m][:, None] == lab[None, :]).astype(float)
        p = (y_pred[m][:, None] == lab[None, :]).astype(float)
        n = int(m.sum())
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
        pos = w @ t
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr.append(np.where(pos > 0, (w @ (t * p)) / pos, np.nan))
            fpr.append(np.where(n - pos > 0, (w @ ((1 - t) * p)) / (n - pos), np.nan))
        sel.append(w @ p / n)
        acc.append(w @ (y_true[m] == y_pred[m]).astype(float) / n)
    return _gap_stats(np.stack(sel, 1), np.stack(acc, 1), np.stack(tpr, 1), np.stack(fpr, 1))


def _num(x: Any) -> float | None:
    """JSON-friendly number: NaN/inf -> None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if np.isfinite(v) else None


def _ci(samples: np.ndarray, point: float, confidence: float) -> tuple[float | None, float | None]:
    """Basic (reverse-percentile) bootstrap interval, clipped to [0, 1].

    Worst-group and worst-class statistics (min/max over many cells) are biased by noise; the percentile
    interval repeats that bias, the basic interval ``[2*point - q_hi, 2*point - q_lo]`` corrects it.
    """
    s = samples[np.isfinite(samples)]
    if s.size == 0 or not np.isfinite(point):
        return None, None
    a = (1 - confidence) / 2
    lo, hi = 2 * point - np.quantile(s, 1 - a), 2 * point - np.quantile(s, a)
    return _num(np.clip(lo, 0, 1)), _num(np.clip(hi, 0, 1))


def group_metrics(pred: Predictions, cfg: BiasGateConfig) -> dict[str, Any]:
    """Per-group n, accuracy, selection rate, TPR, FPR (fairlearn MetricFrame) and the gaps with bootstrap CIs.

    Gaps use only groups with at least ``min_group_size`` rows; the others are in the table, marked not judged.
    Binary tasks with ``positive_label`` judge that class; otherwise every class is checked and the worst judged.
    """
    if pred.groups is None:
        raise InputError("group metrics need a group per row; set data.group_column to the identity column")
    labels = pred.labels
    if cfg.positive_label is not None and cfg.positive_label not in labels:
        raise InputError(f"gates.bias.positive_label {cfg.positive_label!r} is not a label of the model "
                         f"({labels}); set it to one of them or unset it")
    classes = [cfg.positive_label] if cfg.positive_label is not None else list(labels)
    y_true, y_pred = np.array(pred.y_true, dtype=object), np.array(pred.y_pred, dtype=object)
    groups = np.array(pred.groups, dtype=object)
    frame = MetricFrame(metrics=_frame_metrics(labels), y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    by_group = frame.by_group

    table = [_group_row(g, row, labels, classes, cfg.min_group_size) for g, row in by_group.iterrows()]
    judged = [r["group"] for r in table if r["judged"]]
    gaps = _gaps(by_group, judged, classes, labels, (y_true, y_pred, groups), cfg) if len(judged) >= 2 else {}
    return {
        "table": table, "judged_groups": judged, "classes_judged": classes, "positive_label": cfg.positive_label,
        "min_group_size": cfg.min_group_size, "gaps": gaps,
        "bootstrap": {"samples": cfg.bootstrap_samples, "confidence": cfg.confidence, "seed": cfg.seed,
                      "resampling": "rows within each group", "interval": "basic (reverse percentile)"},
    }


def _group_row(g: Any, row: Any, labels: list[str], classes: list[str], min_group_size: int) -> dict[str, Any]:
    """One group's line of the table: n, whether it is judged, accuracy, selection rate, TPR, FPR, notes."""
    n = int(row["n"])
    is_judged = n >= min_group_size
    undefined = [c for c in classes if np.isnan(row[f"tpr[{c}]"]) or np.isnan(row[f"fpr[{c}]"])]
    notes = [] if is_judged else [f"n={n} < min_group_size={min_group_size}: reported, not judged"]
    if undefined:
        notes.append(f"TPR/FPR undefined for {undefined} (no rows of that class, or only that class)")
    return {
        "group": str(g), "n": n, "judged": is_judged, "accuracy": _num(row["accuracy"]),
        "selection_rate": {c: _num(row[f"sel[{c}]"]) for c in labels},
        "tpr": {c: _num(row[f"tpr[{c}]"]) for c in labels},
        "fpr": {c: _num(row[f"fpr[{c}]"]) for c in labels},
        "note": "; ".join(notes),
    }


def _gaps(by_group: Any, judged: list[str], classes: list[str], labels: list[str], data: tuple[Any, Any, Any],
          cfg: BiasGateConfig) -> dict[str, Any]:
    """Each gap metric over the judged groups: its value, bootstrap CI, worst class and per-class values."""
    y_true, y_pred, groups = data
    idx = [labels.index(c) for c in classes]
    gaps: dict[str, Any] = {}
    rows = by_group.loc[[g for g in by_group.index if str(g) in judged]]
    rates = {m: rows[[f"{m}[{c}]" for c in labels]].to_numpy(float)[None] for m in ("sel", "tpr", "fpr")}
    point = _gap_stats(rates["sel"], rows["accuracy"].to_numpy(float)[None], rates["tpr"], rates["fpr"])
    boot = (_bootstrap(y_true, y_pred, groups, judged, labels, cfg.bootstrap_samples, cfg.seed)
            if cfg.bootstrap_samples > 0 else None)
    for metric, (_, higher) in _GAP_THRESHOLDS.items():
        per_class = point[metric][0]
        if metric == "accuracy_gap":
            value, worst_class, by_class = float(per_class), None, None
            samples = boot[metric] if boot else None
        else:
            sub = per_class[idx]
            value = float(_worst(sub, higher))
            finite = [i for i in range(len(idx)) if np.isfinite(sub[i])]
            pick = min if higher else max
            worst_class = classes[pick(finite, key=lambda i: sub[i])] if finite else None
            by_class = {c: _num(per_class[labels.index(c)]) for c in classes}
            samples = _worst(boot[metric][:, idx], higher) if boot else None
        low, high = _ci(samples, value, cfg.confidence) if samples is not None else (None, None)
        gaps[metric] = {"value": _num(value), "ci_low": low, "ci_high": high, "worst_class": worst_class,
                        "by_class": by_class}
    return gaps


def _gap_check(metric: str, gap: dict[str, Any], cfg: BiasGateConfig) -> Check:
    field, higher = _GAP_THRESHOLDS[metric]
    thr = getattr(cfg, field)
    value, low, high = gap["value"], gap["ci_low"], gap["ci_high"]
    where = f" (worst class {gap['worst_class']!r})" if gap.get("worst_class") else ""
    ci = f", {cfg.confidence:.0%} bias-corrected CI [{low}, {high}]" if low is not None else ""
    if value is None:
        return Check(metric, True, None, thr, f"undefined{where}: too few defined group values; not judged",
                     judged=False)
    bound = high if higher else low  # the CI end nearest the "fine" side
    on_ci = cfg.judge_on == "ci_bound" and bound is not None
    judged_value = bound if on_ci else value
    passed = judged_value >= thr if higher else judged_value <= thr
    rule = (f"judged on the CI {'upper' if higher else 'lower'} bound: fails only when the whole interval is "
            f"{'below' if higher else 'above'} the threshold" if on_ci else "judged on the point estimate")
    word = "min" if higher else "max"
    detail = f"{value}{where}{ci} vs {word} {thr}; {rule}"
    point_beyond = value < thr if higher else value > thr
    if passed and point_beyond:
        detail += "; the point estimate is beyond the threshold but the interval is not: possibly noise"
    return Check(metric, passed, value, thr, detail)


def _group_checks(gm: dict[str, Any], cfg: BiasGateConfig) -> list[Check]:
    checks = [Check(f"group {row['group']!r} size", True, row["n"], cfg.min_group_size, row["note"], judged=False)
              for row in gm["table"] if not row["judged"]]
    if len(gm["judged_groups"]) < 2:
        checks.append(Check("group gaps", True, len(gm["judged_groups"]), 2,
                            f"fewer than two groups have >= {cfg.min_group_size} rows; gaps reported, not judged",
                            judged=False))
        return checks
    return checks + [_gap_check(m, gm["gaps"][m], cfg) for m in _GAP_THRESHOLDS]


# --- counterfactual checks (the swaps live in tasks/counterfactual.py) -----------------------------------------

def _counterfactual_checks(cf: dict[str, Any], cfg: BiasGateConfig) -> list[Check]:
    n = cf["n_swaps"]
    specs = [("counterfactual_flip_rate", cf["flip_rate"], cfg.max_counterfactual_flip_rate),
             ("counterfactual_mean_prob_change", cf["mean_prob_change"], cfg.max_counterfactual_prob_change)]
    if n < max(cfg.min_counterfactual_texts, 1):
        why = (f"only {n} swapped texts (< min_counterfactual_texts={cfg.min_counterfactual_texts}); reported, "
               "not judged")
        return [Check(name, True, v, thr, why, judged=False) for name, v, thr in specs]
    worst = max(cf["by_category"].items(), key=lambda kv: kv[1]["flip_rate"] or 0.0)[0]
    (_, rate, rate_max), (name, change, change_max) = specs
    low, high = cf.get("flip_rate_ci") or (None, None)
    on_ci = cfg.judge_on == "ci_bound" and low is not None
    ci = f", {cfg.confidence:.0%} Wilson CI [{low}, {high}]" if low is not None else ""
    rule = ("judged on the CI lower bound, like the group gaps: fails only when the whole interval is above the "
            "threshold" if on_ci else "judged on the point estimate")
    detail = f"{rate} over {n} swaps{ci} vs max {rate_max} (worst category {worst!r}); {rule}"
    passed = (low if on_ci else rate) <= rate_max
    if passed and rate > rate_max:
        detail += "; the point estimate is beyond the threshold but the interval is not: possibly noise"
    return [Check("counterfactual_flip_rate", passed, rate, rate_max, detail),
            Check(name, change <= change_max, change, change_max, f"{change} over {n} swaps vs max {change_max}; "
                  "judged on the point estimate")]


# --- champion comparison and the gate --------------------------------------------------------------------------

def _champion_checks(summary: dict[str, float], champion: dict[str, Any] | None, cfg: BiasGateConfig
                     ) -> tuple[list[Check], list[dict[str, Any]]]:
    if champion is None:
        return [Check("vs champion", True, None, None, "no champion yet", judged=False)], []
    theirs = champion.get("summary")
    if not isinstance(theirs, dict):
        return [Check("vs champion", True, None, None, "the champion's bias details have no summary; not "
                      "compared", judged=False)], []
    checks, rows, tol = [], [], cfg.champion_tolerance
    for metric, higher in SUMMARY_DIRECTION.items():
        mine, ref = summary.get(metric), _num(theirs.get(metric))
        if mine is None or ref is None:
            if mine is not None or ref is not None:
                rows.append({"metric": metric, "candidate": mine, "champion": ref, "worse_by": None})
            continue
        worse_by = round((ref - mine) if higher else (mine - ref), 6)
        rows.append({"metric": metric, "candidate": mine, "champion": ref, "worse_by": worse_by})
        checks.append(Check(f"vs champion: {metric}", worse_by <= tol + 1e-12, mine, ref,
                            f"candidate {mine} vs champion {ref}: worse by {worse_by} (tolerance {tol})"))
    if not checks:
        checks.append(Check("vs champion", True, None, None, "no bias metric both have; not compared",
                            judged=False))
    return checks, rows


def bias_gate(pred: Predictions, cfg: BiasGateConfig, predict_fn: PredictFn | None = None,
              champion: dict[str, Any] | None = None, predicted_by_model: bool = False) -> GateDecision:
    """Group checks when groups exist, counterfactual checks when a model is given, and the champion's record.

    ``champion`` is the ``details`` of the champion's own bias decision. ``predicted_by_model``: ``pred.proba`` is
    ``predict_fn(pred.texts)`` (the evaluation's predictions of the same model), so the counterfactual test scores
    only the swapped texts instead of scoring the originals again.
    """
    has_groups = pred.groups is not None and len(pred) > 0
    if not has_groups and predict_fn is None:
        return GateDecision.skipped(GATE, "no group column (set data.group_column) and no model for the "
                                    "counterfactual test: nothing to measure")
    checks: list[Check] = []
    details: dict[str, Any] = {}
    summary: dict[str, float] = {}
    if has_groups:
        gm = group_metrics(pred, cfg)
        details["groups"] = gm
        checks += _group_checks(gm, cfg)
        summary.update({m: g["value"] for m, g in gm["gaps"].items() if g["value"] is not None})
    if predict_fn is not None:
        if pred.texts is None:
            raise InputError("the counterfactual test needs the texts of the predictions (Predictions.texts)")
        cf = counterfactual_test(pred.texts, predict_fn, pred.labels, cfg,
                                 proba=pred.proba if predicted_by_model else None)
        details["counterfactual"] = cf
        checks += _counterfactual_checks(cf, cfg)
        if cf["n_swaps"] >= max(cfg.min_counterfactual_texts, 1):
            summary["counterfactual_flip_rate"] = cf["flip_rate"]
            summary["counterfactual_mean_prob_change"] = cf["mean_prob_change"]
    champion_checks, details["champion"] = _champion_checks(summary, champion, cfg)
    checks += champion_checks
    details["summary"] = summary
    if not any(c.judged for c in checks):
        reason = "nothing could be judged: " + "; ".join(dict.fromkeys(c.detail for c in checks if c.detail))
        return GateDecision(gate=GATE, outcome=GateOutcome.SKIPPED, reason=reason, checks=checks, details=details)
    return GateDecision.from_checks(GATE, checks, details)
