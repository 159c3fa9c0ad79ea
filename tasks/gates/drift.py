"""Drift between the texts a version was approved on (the reference: its held-out splits) and a batch of new texts.

Four things can move: what the adapter predicts (the predicted-label distribution), how sure it is (its top-class
probability), the texts themselves (their length in words, and the share of their words never seen in training) and
what the base encoder makes of them (its mean-pooled embeddings). Each is judged on an effect size against a
threshold, and counts as drift only when it is also significant at ``alpha``: on 10,000 texts every difference is
significant, so a p-value alone would flag everything.

The statistics are Evidently's (``ValueDrift``: PSI and chi-square for the labels, normed Wasserstein and K-S for
lengths, Mann-Whitney for out-of-vocabulary shares, K-S for confidence; the domain-classifier ROC AUC with its
bootstrap test for embeddings); its HTML report holds the plots. Only aggregates leave this module, never texts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.gates.decision import Check

_WORD = re.compile(r"[^\W\d_]+")
#: Rows per side the embedding classifier sees at most (seeded sample): its AUC is as good on 2,000 as on 10,000.
EMBEDDING_ROWS = 2000


@dataclass
class Side:
    """What drift compares of one set of texts: aggregates per text, never the texts."""

    lengths: np.ndarray  # words per text
    oov: np.ndarray  # share of a text's words not in the training vocabulary
    predicted: list[str]
    confidence: np.ndarray  # top-class probability
    embeddings: np.ndarray  # (n, hidden) base-encoder embeddings

    def __len__(self) -> int:
        return len(self.predicted)


def words(text: str) -> list[str]:
    return _WORD.findall(str(text).lower())


def vocabulary(texts: list[str]) -> set[str]:
    return {w for t in texts for w in words(t)}


def side(texts: list[str], vocab: set[str], labels: list[str], proba: np.ndarray, embeddings: np.ndarray) -> Side:
    per_text = [words(t) for t in texts]
    oov = np.array([sum(w not in vocab for w in ws) / len(ws) if ws else 0.0 for ws in per_text])
    proba = np.asarray(proba, dtype=float)
    return Side(lengths=np.array([len(ws) for ws in per_text], dtype=float), oov=oov,
                predicted=[labels[i] for i in proba.argmax(axis=1)], confidence=proba.max(axis=1),
                embeddings=np.asarray(embeddings, dtype=np.float32))


def _frame(s: Side):
    import pandas as pd

    return pd.DataFrame({"prediction": s.predicted, "length": s.lengths, "oov": s.oov, "confidence": s.confidence})


#: (statistic, column, Evidently method); the effect and the test of each measure are in :func:`measures`.
_EVIDENTLY = (("prediction_psi", "prediction", "psi"), ("prediction_p", "prediction", "chisquare"),
              ("length_drift", "length", "wasserstein"), ("length_p", "length", "ks"),
              ("oov_p", "oov", "mannw"), ("confidence_p", "confidence", "ks"))


def evidently_values(ref: Side, cur: Side, html: Path | None = None) -> dict[str, float]:
    """Evidently's ValueDrift statistics (distances and p-values) for the per-text columns; its plots to ``html``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=["length", "oov", "confidence"], categorical_columns=["prediction"])
    report = Report([ValueDrift(column=col, method=method) for _, col, method in _EVIDENTLY])
    snapshot = report.run(Dataset.from_pandas(_frame(cur), data_definition=definition),
                          Dataset.from_pandas(_frame(ref), data_definition=definition))
    if html is not None:
        snapshot.save_html(str(html))
    values = [m["value"] for m in snapshot.dict()["metrics"]]
    return {name: float(v) for (name, _, _), v in zip(_EVIDENTLY, values)}


def embedding_drift(ref: np.ndarray, cur: np.ndarray, alpha: float, seed: int = 0) -> tuple[float, bool]:
    """(ROC AUC of a classifier telling ``cur`` from ``ref`` on held-out rows, whether it beats chance at ``alpha``):
    Evidently's domain-classifier method with its bootstrap test."""
    import pandas as pd
    from evidently.metrics.embeddings import ModelDriftMethod

    rng = np.random.default_rng(seed)

    def sample(x: np.ndarray) -> "pd.DataFrame":
        rows = rng.choice(len(x), EMBEDDING_ROWS, replace=False) if len(x) > EMBEDDING_ROWS else np.arange(len(x))
        return pd.DataFrame(x[rows], columns=[f"e{i}" for i in range(x.shape[1])])

    method = ModelDriftMethod(bootstrap=True, quantile_probability=1 - alpha)
    auc, significant, _ = method(sample(cur), sample(ref))
    return float(auc), bool(significant)


def measures(ref: Side, cur: Side, alpha: float, html: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each drift measure: its effect size (larger: more drift), p-value (or the bootstrap verdict), and both sides'
    summary."""
    v = evidently_values(ref, cur, html)
    auc, auc_significant = embedding_drift(ref.embeddings, cur.embeddings, alpha)
    seen = sorted(set(ref.predicted) | set(cur.predicted))

    def dist(pred: list[str]) -> dict[str, float]:
        counts = Counter(pred)
        return {k: round(counts[k] / max(len(pred), 1), 4) for k in seen}

    return {
        "prediction": {"effect": v["prediction_psi"], "p": v["prediction_p"], "threshold_key": "max_prediction_psi",
                       "what": "PSI of the predicted labels", "reference": dist(ref.predicted),
                       "batch": dist(cur.predicted)},
        "length": {"effect": v["length_drift"], "p": v["length_p"], "threshold_key": "max_length_drift",
                   "what": "Wasserstein distance of text lengths (in reference std)",
                   "reference": _summary(ref.lengths), "batch": _summary(cur.lengths)},
        "vocabulary": {"effect": float(cur.oov.mean() - ref.oov.mean()), "p": v["oov_p"],
                       "threshold_key": "max_oov_increase", "what": "rise in the share of words unseen in training",
                       "reference": _summary(ref.oov), "batch": _summary(cur.oov)},
        "confidence": {"effect": float(ref.confidence.mean() - cur.confidence.mean()), "p": v["confidence_p"],
                       "threshold_key": "max_confidence_drop", "what": "fall of the mean top-class probability",
                       "reference": _summary(ref.confidence), "batch": _summary(cur.confidence)},
        "embeddings": {"effect": auc, "p": None, "significant": auc_significant, "threshold_key": "max_embedding_auc",
                       "what": "ROC AUC telling batch from reference on base-encoder embeddings (0.5: alike)",
                       "reference": {"n": len(ref)}, "batch": {"n": len(cur)}},
    }


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"n": int(len(x)), "mean": round(float(np.mean(x)), 4) if len(x) else 0.0,
            "p50": round(float(np.median(x)), 4) if len(x) else 0.0}


def drift_checks(found: dict[str, dict[str, Any]], thresholds: dict[str, Any], alpha: float) -> list[Check]:
    """One check per measure: drift when the effect exceeds its threshold *and* is significant at ``alpha``."""
    checks = []
    for name, m in found.items():
        limit = float(thresholds[m["threshold_key"]])
        significant = m["significant"] if m["p"] is None else m["p"] < alpha
        test = ("beats chance (bootstrap)" if significant else "within chance (bootstrap)") if m["p"] is None \
            else f"p={m['p']:.2g}"
        effect = float(m["effect"])
        drifted = effect > limit and significant
        checks.append(Check(f"drift: {name}", not drifted, round(effect, 4), limit,
                            f"{m['what']}: {effect:.3f} (max {limit}), {test}"
                            + ("" if drifted or effect <= limit else "; above the threshold but not significant")))
    return checks
