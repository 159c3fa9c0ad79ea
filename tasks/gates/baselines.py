"""Reference baselines that need no base model: the candidate must beat them to be worth its weights."""

from __future__ import annotations

from typing import Any

from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tasks.core.errors import InputError
from tasks.core.metrics import classification_metrics

BASELINES: tuple[str, ...] = ("majority", "tfidf_logreg")


def make_baseline(name: str, seed: int = 13) -> Any:
    """An unfitted scikit-learn estimator on raw texts."""
    if name == "majority":
        return DummyClassifier(strategy="most_frequent")
    if name == "tfidf_logreg":
        return Pipeline([
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)),
            # balanced weights: the primary metric is macro F1 by default, so the baseline should not ignore
            # small classes either
            ("logreg", LogisticRegression(max_iter=1000, class_weight="balanced", random_state=seed)),
        ])
    raise InputError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")


def fit_baselines(train_texts: list[str], train_labels: list[str], names: list[str] | tuple[str, ...] = BASELINES,
                  seed: int = 13) -> dict[str, Any]:
    """Fit each named baseline on the training split."""
    texts, labels = [str(t) for t in train_texts], [str(y) for y in train_labels]
    if not texts or len(texts) != len(labels):
        raise InputError(f"baselines need training texts with one label each ({len(texts)} texts, "
                         f"{len(labels)} labels)")
    if len(set(labels)) < 2 and "tfidf_logreg" in names:
        raise InputError("the tfidf_logreg baseline needs at least two classes in the training split; add data "
                         "or drop it from gates.regression.baselines")
    return {name: make_baseline(name, seed).fit(texts, labels) for name in names}


def evaluate_baselines(fitted: dict[str, Any], test_texts: list[str], test_labels: list[str],
                       labels: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``classification_metrics`` of each fitted baseline on the test split (the candidate's split)."""
    texts = [str(t) for t in test_texts]
    out = {}
    for name, model in fitted.items():
        known = list(labels) if labels is not None else [str(c) for c in model.classes_]
        out[name] = classification_metrics(test_labels, [str(y) for y in model.predict(texts)], known)
    return out
