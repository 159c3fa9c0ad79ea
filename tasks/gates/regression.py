"""The regression gate.

It compares the candidate with the champion (headline metric, per-class recall, per-group accuracy, an
optional golden set), with reference baselines, and its own train/validation gap. Each threshold comparison is
judged by MLflow's ``validate_evaluation_results`` with a ``MetricThreshold``.
"""

from __future__ import annotations

import logging
from typing import Any

from mlflow.models import MetricThreshold
from mlflow.models.evaluation import EvaluationResult
from mlflow.models.evaluation.validation import ModelValidationFailedException, validate_evaluation_results

from tasks.core.config import RegressionGateConfig
from tasks.gates.decision import Check, GateDecision
from tasks.core.errors import InputError
from tasks.core.names import GateOutcome
from tasks.core.metrics import classification_metrics, metrics_of, round6
from tasks.core.predictions import PredictFn, Predictions

__all__ = ["GATE", "PredictFn", "Predictions", "classification_metrics", "metrics_of", "regression_gate"]

GATE = "regression"
_EPS = 1e-9  # float slack so that a drop of exactly the tolerance passes
_HEADLINE = ("accuracy", "macro_f1", "weighted_f1")


# --- threshold checks through MLflow ------------------------------------------------------------------------

def _threshold_check(name: str, value: float, threshold: float, higher_is_better: bool, detail: str) -> Check:
    """Judge ``value`` against ``threshold`` with mlflow.validate_evaluation_results; a failure becomes a Check."""
    slack = -_EPS if higher_is_better else _EPS
    rule = {name: MetricThreshold(threshold=float(threshold) + slack, greater_is_better=higher_is_better)}
    mlflow_log = logging.getLogger("mlflow.models.evaluation.validation")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # it logs two INFO lines per call; the Check is the record
    try:
        validate_evaluation_results(rule, EvaluationResult(metrics={name: float(value)}, artifacts={}))
        passed = True
    except ModelValidationFailedException:
        passed = False
    finally:
        mlflow_log.setLevel(level)
    return Check(name, passed, round6(value), round6(threshold), detail)


def _reported(name: str, detail: str, value: Any = None) -> Check:
    return Check(name, True, value, None, detail, judged=False)


def _primary(metrics: dict[str, Any], key: str, who: str) -> float:
    value = metrics.get(key)
    if value is None:
        raise InputError(f"the {who} metrics have no {key!r}; compute them with classification_metrics")
    return float(value)


# --- the rules ----------------------------------------------------------------------------------------------

def _champion_checks(cand: dict[str, Any], champ: dict[str, Any], cfg: RegressionGateConfig
                     ) -> tuple[list[Check], dict[str, Any]]:
    key, tol = cfg.primary_metric, cfg.champion_tolerance
    c, h = _primary(cand, key, "candidate"), _primary(champ, key, "champion")
    cand_labels, champ_labels = list(cand.get("labels", [])), list(champ.get("labels", []))
    note = "" if set(cand_labels) == set(champ_labels) else "; the champion knows other labels (see per-class)"
    checks = [_threshold_check(f"vs champion: {key}", c, h - tol, True,
                               f"candidate {c:.4f} vs champion {h:.4f}: change {c - h:+.4f}, allowed drop {tol}"
                               + note)]
    shared = [x for x in cand_labels if x in champ_labels]
    rows = []
    for label in shared:
        rc = cand["per_class"][label]["recall"]
        rh = champ["per_class"][label]["recall"]
        rows.append({"class": label, "candidate_recall": rc, "champion_recall": rh,
                     "change": None if rc is None or rh is None else round6(rc - rh)})
        if rc is None or rh is None:
            checks.append(_reported(f"vs champion: recall[{label}]", "recall undefined (no test rows of this "
                                    "class); not judged"))
            continue
        checks.append(_threshold_check(
            f"vs champion: recall[{label}]", rc, rh - cfg.per_class_recall_tolerance, True,
            f"candidate {rc:.4f} vs champion {rh:.4f}: change {rc - rh:+.4f}, allowed drop "
            f"{cfg.per_class_recall_tolerance}"))
    only_cand = [x for x in cand_labels if x not in champ_labels]
    only_champ = [x for x in champ_labels if x not in cand_labels]
    if only_cand or only_champ:
        checks.append(_reported("vs champion: label sets", f"compared the {len(shared)} shared classes; only "
                                f"the candidate knows {only_cand}, only the champion knows {only_champ}"))
    group_checks, group_rows = _group_checks(cand, champ, cfg)
    details = {"primary": {"candidate": c, "champion": h, "change": round6(c - h)}, "per_class": rows,
               "only_candidate_labels": only_cand, "only_champion_labels": only_champ, "per_group": group_rows}
    return checks + group_checks, details


def _group_checks(cand: dict[str, Any], champ: dict[str, Any], cfg: RegressionGateConfig
                  ) -> tuple[list[Check], list[dict[str, Any]]]:
    mine, theirs = cand.get("per_group"), champ.get("per_group")
    if not mine or not theirs:
        return [], []
    checks, rows, small = [], [], []
    for g, m in mine.items():
        t = theirs.get(g)
        if t is None or m["accuracy"] is None or t["accuracy"] is None:
            continue
        rows.append({"group": g, "n": m["n"], "candidate_accuracy": m["accuracy"],
                     "champion_accuracy": t["accuracy"], "change": round6(m["accuracy"] - t["accuracy"])})
        if m["n"] < cfg.min_group_size:
            small.append(f"{g} (n={m['n']})")
            continue
        checks.append(_threshold_check(
            f"vs champion: accuracy[group {g}]", m["accuracy"], t["accuracy"] - cfg.per_group_tolerance, True,
            f"candidate {m['accuracy']:.4f} vs champion {t['accuracy']:.4f}, allowed drop {cfg.per_group_tolerance}"))
    if small:
        checks.append(_reported("vs champion: small groups", f"groups below min_group_size={cfg.min_group_size} "
                                f"are reported, not judged: {', '.join(small)}"))
    return checks, rows


#: What to try when an adapter loses to the cheap baseline (never: loosen the gate or weaken the baseline).
BASELINE_HINT = ("to beat it, try more epochs (training.epochs, training.early_stopping_patience), LoRA on every "
                 "linear layer (peft.target_modules: [all-linear]), a larger rank (peft.r), another learning rate "
                 "(training.learning_rate; the head's: training.head_learning_rate) or a balanced loss "
                 "(training.class_weights: balanced)")


def _baseline_check(cand: dict[str, Any], baselines: dict[str, dict[str, Any]], cfg: RegressionGateConfig
                    ) -> tuple[Check, dict[str, Any]]:
    key = cfg.primary_metric
    if not baselines:
        return _reported(f"vs baseline: {key}", "no reference baseline given; not judged"), {}
    values = {name: _primary(m, key, f"baseline {name!r}") for name, m in baselines.items()}
    best = max(values, key=values.get)
    c, b, margin = _primary(cand, key, "candidate"), values[best], cfg.min_margin_over_baseline
    check = _threshold_check(f"vs baseline: {key}", c, b + margin, True,
                             f"candidate {c:.4f} vs best baseline {best!r} {b:.4f}: margin {c - b:+.4f}, "
                             f"required {margin:+.4f}")
    if not check.passed:
        check.detail += f"; {BASELINE_HINT}"
    return check, {"values": values, "best": best}


def _overfit_check(train: dict[str, Any] | None, val: dict[str, Any] | None, cfg: RegressionGateConfig
                   ) -> tuple[Check, dict[str, Any]]:
    key = cfg.primary_metric
    if train is None or val is None:
        return _reported("train-validation gap", "train or validation metrics not given; not judged"), {}
    t, v = _primary(train, key, "train"), _primary(val, key, "validation")
    check = _threshold_check("train-validation gap", t - v, cfg.max_overfit_gap, False,
                             f"train {key} {t:.4f} - validation {v:.4f} = {t - v:+.4f}, max {cfg.max_overfit_gap}")
    return check, {"train": t, "validation": v, "gap": round6(t - v)}


def _golden_check(golden: dict[str, Any], cfg: RegressionGateConfig) -> tuple[Check, dict[str, Any]]:
    key, tol = cfg.primary_metric, cfg.champion_tolerance
    cand, champ = golden.get("candidate"), golden.get("champion")
    if cand is None:
        raise InputError("golden metrics need a 'candidate' entry (classification_metrics on the golden set)")
    c = _primary(cand, key, "golden candidate")
    if champ is None:
        return _reported(f"golden set: {key}", "no champion yet; golden metrics reported", round6(c)), {"candidate": c}
    h = _primary(champ, key, "golden champion")
    check = _threshold_check(f"golden set: {key}", c, h - tol, True,
                             f"candidate {c:.4f} vs champion {h:.4f} on the golden set: change {c - h:+.4f}, "
                             f"allowed drop {tol}")
    return check, {"candidate": c, "champion": h, "change": round6(c - h)}


def _table(candidate: dict[str, Any], champion: dict[str, Any] | None, baselines: dict[str, dict[str, Any]]
           ) -> list[dict[str, Any]]:
    models = {"candidate": candidate, **({"champion": champion} if champion else {}),
              **{f"baseline:{k}": v for k, v in baselines.items()}}
    return [{"model": name, **{k: m.get(k) for k in _HEADLINE}} for name, m in models.items()]


def regression_gate(candidate: dict[str, Any], champion: dict[str, Any] | None,
                    baselines: dict[str, dict[str, Any]], train_metrics: dict[str, Any] | None,
                    val_metrics: dict[str, Any] | None, cfg: RegressionGateConfig,
                    golden: dict[str, Any] | None = None) -> GateDecision:
    """Candidate vs champion (headline, per class, per group), vs the best baseline, and its overfitting gap.

    Every metrics dict is a ``classification_metrics`` result on the same test split. ``golden`` holds
    ``{"candidate": metrics, "champion": metrics | None}`` on a fixed golden set.
    """
    checks: list[Check] = []
    details: dict[str, Any] = {"primary_metric": cfg.primary_metric,
                               "table": _table(candidate, champion, baselines)}
    if champion is None:
        checks.append(_reported(f"vs champion: {cfg.primary_metric}", "no champion yet"))
        details["champion"] = None
    else:
        champion_checks, details["champion"] = _champion_checks(candidate, champion, cfg)
        checks += champion_checks
    check, details["baselines"] = _baseline_check(candidate, baselines, cfg)
    checks.append(check)
    check, details["overfit"] = _overfit_check(train_metrics, val_metrics, cfg)
    checks.append(check)
    if golden is not None:
        check, details["golden"] = _golden_check(golden, cfg)
        checks.append(check)
    if not any(c.judged for c in checks):
        reason = "nothing to compare: no champion yet, no baseline, no train/validation metrics"
        return GateDecision(gate=GATE, outcome=GateOutcome.SKIPPED, reason=reason, checks=checks, details=details)
    return GateDecision.from_checks(GATE, checks, details)
