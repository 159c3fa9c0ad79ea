"""Monitoring's statistics without a model: drift is judged on effect sizes (not p-values alone), performance drops
need both a large effect and an interval clear of zero, and nothing a report keeps holds a raw text."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from tasks.gates import drift, performance
from tasks.governance.policy import MonitoringPolicy
from validation.pii import redact

LABELS = ["billing", "shipping", "technical"]
TH = MonitoringPolicy().model_dump()


def make_side(rng, n: int, shares=(0.5, 0.3, 0.2), length=20.0, oov=0.05, sure=0.85, shift=0.0) -> drift.Side:
    predicted = list(rng.choice(LABELS, n, p=shares))
    return drift.Side(lengths=rng.normal(length, 5, n).clip(1), oov=rng.beta(1, 1 / oov - 1, n),
                      predicted=predicted, confidence=rng.beta(sure * 20, (1 - sure) * 20, n),
                      embeddings=rng.normal(shift, 1, (n, 16)).astype(np.float32))


def judged(ref: drift.Side, cur: drift.Side) -> dict[str, bool]:
    checks = drift.drift_checks(drift.measures(ref, cur, TH["alpha"]), TH, TH["alpha"])
    return {c.name.removeprefix("drift: "): c.passed for c in checks}


def test_effect_sizes_decide_not_p_values_and_a_real_shift_is_caught():
    rng = np.random.default_rng(0)
    ref = make_side(rng, 2000)
    # 10,000 texts with a small change everywhere: significant, but every effect is below its threshold
    slightly = make_side(rng, 10_000, shares=(0.47, 0.32, 0.21), length=21.0, oov=0.06, sure=0.83, shift=0.03)
    assert judged(ref, slightly) == dict.fromkeys(("prediction", "length", "vocabulary", "confidence", "embeddings"),
                                                  True)
    # a batch about another topic, in other words, that the adapter is unsure of
    shifted = make_side(rng, 500, shares=(0.05, 0.15, 0.8), length=35.0, oov=0.4, sure=0.55, shift=0.8)
    assert not any(judged(ref, shifted).values())


def test_scores_match_sklearn_and_carry_bootstrap_intervals():
    rng = np.random.default_rng(1)
    y = list(rng.choice(LABELS, 3000))
    pred = [t if rng.random() < 0.8 else "billing" for t in y]
    s = performance.scores(y, pred, LABELS, n_boot=300)
    assert s["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred), abs=1e-4)
    assert s["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-4)
    lo, hi = s["macro_f1"]["ci"]
    assert lo < s["macro_f1"]["value"] < hi and hi - lo < 0.05
    assert s["per_class"]["shipping"]["recall"] == pytest.approx(
        sum(p == t == "shipping" for t, p in zip(y, pred)) / y.count("shipping"), abs=1e-4)
    assert "samples" not in performance.public(s)


@pytest.mark.parametrize("n_batch, drop, breach", [(4000, 0.15, True), (4000, 0.02, False), (40, 0.15, False)])
def test_a_performance_breach_needs_a_large_drop_that_is_not_noise(n_batch, drop, breach):
    """A 2-point drop is within the threshold; a 15-point drop on 40 rows could be noise (its interval reaches
    zero); on 4,000 rows it is a breach."""
    rng = np.random.default_rng(2)
    ref_y = list(rng.choice(LABELS, 1000))
    ref_p = [t if rng.random() < 0.9 else "billing" for t in ref_y]
    y = list(rng.choice(LABELS, n_batch))
    p = [t if rng.random() < 0.9 - drop else ("shipping" if t == "billing" else "billing") for t in y]
    ref, cur = performance.scores(ref_y, ref_p, LABELS, 300), performance.scores(y, p, LABELS, 300, seed=1)
    acc = performance.performance_checks(ref, cur, TH)[0]
    assert acc.name == "performance: accuracy" and acc.passed is (not breach), acc.detail


def test_groups_below_the_minimum_are_listed_not_judged():
    y = ["billing"] * 50 + ["shipping"] * 50
    groups = ["en-US"] * 90 + ["en-AU"] * 10
    out = performance.group_scores(y, y, groups, LABELS, min_rows=30, n_boot=50)
    assert out["en-US"]["judged"] and out["en-US"]["accuracy"]["value"] == 1.0
    assert out["en-AU"] == {"n": 10, "judged": False, "note": "n=10 < 30: too few rows to say"}


def test_examples_are_redacted_before_any_report_sees_them():
    text = "refund to jo.doe@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111, order 12345 " + "x" * 100
    shown = redact(text)
    assert "jo.doe" not in shown and "7946" not in shown and "4111" not in shown and "12345" not in shown
    assert len(shown) <= 80
