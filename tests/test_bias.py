"""Bias gate on constructed predictions: each rule firing and not firing, no model needed."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tasks.gates.bias import bias_gate, counterfactual_test, group_metrics
from tasks.core.config import BiasGateConfig
from tasks.core.config_files import config_from_dict
from tasks.core.errors import InputError
from tasks.core.names import GateOutcome
from tasks.core.predictions import Predictions

LABELS = ["ham", "spam"]


def cfg(**kw) -> BiasGateConfig:
    return BiasGateConfig(**{"bootstrap_samples": 50, **kw})


def rows(group: str, tp: int = 0, fn: int = 0, fp: int = 0, tn: int = 0) -> list[tuple[str, str, str]]:
    """(true, predicted, group) rows with exact confusion counts for the positive class 'spam'."""
    return ([("spam", "spam", group)] * tp + [("spam", "ham", group)] * fn + [("ham", "spam", group)] * fp
            + [("ham", "ham", group)] * tn)


def make_pred(*parts: list[tuple[str, str, str]], labels: list[str] = LABELS, texts: list[str] | None = None
              ) -> Predictions:
    data = [r for part in parts for r in part]
    y_true, y_pred, groups = (list(c) for c in zip(*data))
    proba = np.array([[0.9 if p == lab else 0.1 / (len(labels) - 1) for lab in labels] for p in y_pred])
    return Predictions(labels, y_true, y_pred, proba, groups, texts)


def check(decision, name: str):
    return next(c for c in decision.checks if c.name == name)


# --- disparate impact ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("b_positives, outcome", [(30, GateOutcome.FAILED), (54, GateOutcome.PASSED)])
def test_disparate_impact_four_fifths_rule(b_positives, outcome):
    # perfect predictions: selection rate = base rate, so only the DI ratio can differ (0.5 vs 0.9)
    pred = make_pred(rows("a", tp=60, tn=40), rows("b", tp=b_positives, tn=100 - b_positives))
    d = bias_gate(pred, cfg(positive_label="spam"))
    di = check(d, "disparate_impact_ratio")
    assert di.value == pytest.approx(b_positives / 60)
    assert di.threshold == 0.8
    assert d.outcome == outcome
    assert di.passed == (outcome == GateOutcome.PASSED)
    gap = d.details["groups"]["gaps"]["disparate_impact_ratio"]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]


def test_gap_within_noise_passes_on_ci_bound_but_fails_on_point_estimate():
    pred = make_pred(rows("a", tp=20, tn=20), rows("b", tp=15, tn=25))  # DI 0.75 on 40 rows per group
    on_ci = check(bias_gate(pred, cfg()), "disparate_impact_ratio")
    assert on_ci.passed and "CI upper bound" in on_ci.detail and "possibly noise" in on_ci.detail
    on_point = check(bias_gate(pred, cfg(judge_on="point")), "disparate_impact_ratio")
    assert not on_point.passed and "point estimate" in on_point.detail


def test_binary_without_positive_label_judges_the_worse_class():
    pred = make_pred(rows("a", tp=60, tn=40), rows("b", tp=54, tn=46))  # spam 0.54/0.6, ham 0.40/0.46
    gap = group_metrics(pred, cfg())["gaps"]["disparate_impact_ratio"]
    assert gap["worst_class"] == "ham" and gap["value"] == pytest.approx(0.40 / 0.46, abs=1e-6)


def test_bootstrap_is_seeded():
    pred = make_pred(rows("a", tp=20, tn=20), rows("b", tp=15, tn=25))
    first = group_metrics(pred, cfg(seed=3))["gaps"]
    assert group_metrics(pred, cfg(seed=3))["gaps"] == first
    assert group_metrics(pred, cfg(seed=4))["gaps"] != first


# --- equalized odds and worst-group accuracy ----------------------------------------------------------------

def _unequal_error_rates():
    # same selection rate (0.5) in both groups; group a has TPR 0.8 / FPR 0.2, group b is perfect
    return make_pred(rows("a", tp=160, fn=40, fp=40, tn=160), rows("b", tp=200, tn=200))


def test_equalized_odds_difference_fires():
    d = bias_gate(_unequal_error_rates(), cfg(max_accuracy_gap=1.0))
    eo = check(d, "equalized_odds_difference")
    assert eo.value == pytest.approx(0.2)
    assert not eo.passed and d.failed
    assert check(d, "disparate_impact_ratio").passed


def test_equalized_odds_difference_within_threshold_passes():
    d = bias_gate(_unequal_error_rates(), cfg(max_accuracy_gap=1.0, max_equalized_odds_difference=0.3))
    assert check(d, "equalized_odds_difference").passed and d.outcome == GateOutcome.PASSED


@pytest.mark.parametrize("max_gap, passed", [(0.1, False), (0.4, True)])
def test_worst_group_accuracy_gap(max_gap, passed):
    pred = make_pred(rows("a", tp=200, tn=200), rows("b", tp=140, fn=60, fp=60, tn=140))  # accuracy 1.0 vs 0.7
    d = bias_gate(pred, cfg(max_equalized_odds_difference=1.0, max_accuracy_gap=max_gap))
    gap = check(d, "accuracy_gap")
    assert gap.value == pytest.approx(0.3)
    assert gap.passed is passed and d.failed is not passed


# --- small and degenerate groups ----------------------------------------------------------------------------

def test_small_groups_are_reported_not_judged():
    # group c would have DI 0 and accuracy 0, but has only 5 rows
    pred = make_pred(rows("a", tp=50, tn=50), rows("b", tp=50, tn=50), rows("c", fn=5))
    d = bias_gate(pred, cfg())
    assert d.outcome == GateOutcome.PASSED
    assert d.details["groups"]["judged_groups"] == ["a", "b"]
    small = check(d, "group 'c' size")
    assert not small.judged and "reported, not judged" in small.detail
    row_c = next(r for r in d.details["groups"]["table"] if r["group"] == "c")
    assert row_c["n"] == 5 and row_c["judged"] is False and row_c["accuracy"] == 0.0


def test_single_class_group_does_not_crash_and_its_tpr_is_undefined():
    pred = make_pred(rows("a", tp=45, fn=5, fp=5, tn=45), rows("b", tp=45, fn=5, fp=5, tn=45),
                     rows("c", fp=5, tn=45))  # c has no true 'spam': TPR undefined
    gm = group_metrics(pred, cfg())
    row_c = next(r for r in gm["table"] if r["group"] == "c")
    assert row_c["tpr"]["spam"] is None and row_c["fpr"]["spam"] == pytest.approx(0.1)
    assert "undefined" in row_c["note"]
    assert gm["gaps"]["equalized_odds_difference"]["value"] == pytest.approx(0.0)  # TPR spread from a, b only
    json.dumps(gm)  # NaN never leaks into the report


def test_fewer_than_two_judged_groups_is_skipped_with_reason():
    pred = make_pred(rows("a", tp=50, tn=50), rows("b", tp=1, tn=2))
    d = bias_gate(pred, cfg())
    assert d.outcome == GateOutcome.SKIPPED and "fewer than two groups" in d.reason


def test_multiclass_judges_the_worst_class_and_positive_label_narrows_it():
    labels = ["a", "b", "c"]
    data = ([(y, y, "x") for y in labels for _ in range(50)]
            + [(y, y, "y") for y in ("a", "b") for _ in range(50)] + [("c", "c", "y")] * 10)
    pred = make_pred(data, labels=labels)
    d = bias_gate(pred, cfg(min_disparate_impact_ratio=0.7))
    gap = d.details["groups"]["gaps"]["disparate_impact_ratio"]
    assert gap["worst_class"] == "c" and gap["value"] == pytest.approx((10 / 110) / (1 / 3), abs=1e-6)
    assert d.failed
    only_a = bias_gate(pred, cfg(min_disparate_impact_ratio=0.7, positive_label="a"))
    assert only_a.outcome == GateOutcome.PASSED  # class a: 0.333 / 0.4545 = 0.73


def test_unknown_positive_label_is_an_input_error():
    with pytest.raises(InputError, match="positive_label"):
        group_metrics(make_pred(rows("a", tp=1, tn=1)), cfg(positive_label="eggs"))


# --- counterfactual swaps -----------------------------------------------------------------------------------

TEXTS = ["He said the order was late", "she wants a refund", "Ask HIM about his account", "Nothing to swap here",
         "Mark this as done, thanks Mark", "the theme is fine"]


def keys_on_she(texts: list[str]) -> np.ndarray:
    return np.array([[0.2, 0.8] if re.search(r"\b(she|her)\b", t, re.I) else [0.9, 0.1] for t in texts])


def test_counterfactual_flips_are_measured_and_listed():
    cf = counterfactual_test(TEXTS, keys_on_she, LABELS, cfg())
    assert cf["n_texts_with_terms"] == 4 and cf["by_category"]["gender"]["n_swaps"] == 3
    assert cf["by_category"]["gender"]["flip_rate"] == 1.0
    assert cf["by_category"]["names"]["flip_rate"] == 0.0
    worst = cf["worst_examples"][0]
    assert worst["flipped"] and worst["delta"] == pytest.approx(-0.7)
    assert {worst["original_label"], worst["swapped_label"]} == {"ham", "spam"}
    swapped = {e["original"]: e["swapped"] for e in cf["worst_examples"]}
    assert swapped["He said the order was late"] == "She said the order was late"
    assert swapped["Ask HIM about his account"] == "Ask HER about her account"
    assert swapped["Mark this as done, thanks Mark"] == "Rahul this as done, thanks Rahul"


def test_swaps_are_whole_word_and_proper_nouns_need_capitals():
    cf = counterfactual_test(["the theme is hers, mark it", "mark my words"], keys_on_she, LABELS, cfg())
    swapped = [e["swapped"] for e in cf["worst_examples"]]
    assert swapped == ["the theme is his, mark it"]


def test_counterfactual_gate_fails_on_flips_and_passes_without():
    texts = [f"{w} asked about order {i}" for i in range(15) for w in ("He", "She")]
    pred = make_pred([("ham", "ham", "none")] * len(texts), texts=texts)
    pred.groups = None
    failed = bias_gate(pred, cfg(), predict_fn=keys_on_she)
    assert failed.failed and not check(failed, "counterfactual_flip_rate").passed
    assert failed.details["summary"]["counterfactual_flip_rate"] == 1.0
    steady = bias_gate(pred, cfg(), predict_fn=lambda ts: np.tile([0.9, 0.1], (len(ts), 1)))
    assert steady.outcome == GateOutcome.PASSED
    assert check(steady, "counterfactual_mean_prob_change").value == 0.0


def test_too_few_swaps_are_reported_not_judged():
    pred = make_pred([("ham", "ham", "none")] * 3, texts=["he is here", "she is here", "no terms"])
    pred.groups = None
    d = bias_gate(pred, cfg(), predict_fn=keys_on_she)
    assert d.outcome == GateOutcome.SKIPPED and "only 2 swapped texts" in d.reason


def test_term_lists_are_overridable():
    only_kings = cfg(counterfactual_terms={"gender": [("king", "queen")], "names": []})
    cf = counterfactual_test(["he met the King", "Mark it"], keys_on_she, LABELS, only_kings)
    assert [e["swapped"] for e in cf["worst_examples"]] == ["he met the Queen"]
    cf = counterfactual_test(["he left"], keys_on_she, LABELS, cfg(), terms={"pronouns": [("he", "she")]})
    assert cf["categories"] == ["pronouns"] and cf["flip_rate"] == 1.0


def test_predict_fn_with_wrong_shape_is_an_input_error():
    with pytest.raises(InputError, match="predict_fn returned shape"):
        counterfactual_test(["he left"], lambda ts: np.ones((len(ts), 3)), LABELS, cfg())


def test_known_probabilities_of_the_originals_give_the_same_result_scoring_only_the_swaps():
    scored: list[str] = []

    def counting(texts: list[str]) -> np.ndarray:
        scored.extend(texts)
        return keys_on_she(texts)

    again = counterfactual_test(TEXTS, keys_on_she, LABELS, cfg())
    known = counterfactual_test(TEXTS, counting, LABELS, cfg(), proba=keys_on_she(TEXTS))
    assert known == again
    assert not set(scored) & set(TEXTS) and len(scored) == known["n_swaps"]  # only the swapped texts
    pred = make_pred([("ham", "ham", "none")] * len(TEXTS), texts=TEXTS)
    pred.groups, pred.proba = None, keys_on_she(TEXTS)
    assert bias_gate(pred, cfg(), predict_fn=keys_on_she, predicted_by_model=True).details["counterfactual"] == again
    with pytest.raises(InputError, match="the given probabilities have shape"):
        counterfactual_test(TEXTS, keys_on_she, LABELS, cfg(), proba=keys_on_she(TEXTS[:2]))


# --- champion and skipping ----------------------------------------------------------------------------------

def _di_point_nine():
    return make_pred(rows("a", tp=60, tn=40), rows("b", tp=54, tn=46))


def test_worse_than_champion_fails_even_under_the_absolute_threshold():
    champion = bias_gate(make_pred(rows("a", tp=60, tn=40), rows("b", tp=60, tn=40)), cfg()).details  # DI 1.0
    d = bias_gate(_di_point_nine(), cfg(), champion=champion)
    assert check(d, "disparate_impact_ratio").passed
    vs = check(d, "vs champion: disparate_impact_ratio")
    assert not vs.passed and d.failed and "worse by 0.1" in vs.detail


def test_better_than_champion_passes_and_no_champion_is_reported():
    d = bias_gate(_di_point_nine(), cfg(), champion={"summary": {"disparate_impact_ratio": 0.85}})
    assert check(d, "vs champion: disparate_impact_ratio").passed and d.outcome == GateOutcome.PASSED
    alone = bias_gate(_di_point_nine(), cfg())
    first = check(alone, "vs champion")
    assert not first.judged and first.detail == "no champion yet"


def test_no_groups_and_no_model_is_skipped():
    pred = make_pred(rows("a", tp=5, tn=5))
    pred.groups = None
    d = bias_gate(pred, cfg())
    assert d.outcome == GateOutcome.SKIPPED and "data.group_column" in d.reason


def test_decision_is_json_serialisable():
    pred = _di_point_nine()
    pred.texts = ["he paid"] * len(pred)
    json.dumps(bias_gate(pred, cfg(), predict_fn=keys_on_she).to_dict())


@pytest.mark.parametrize("bad, message", [
    ({"min_disparate_impact_ratio": 1.5}, "must be in [0, 1]"),
    ({"bootstrap_samples": 5}, "judge_on: point"),
    ({"counterfactual_terms": {"gender": [["he", "He"]]}}, "two different non-empty terms"),
])
def test_config_rejects_bad_values_naming_the_fix(bad, message):
    with pytest.raises(InputError) as err:
        config_from_dict({"data": {"path": "x.csv"}, "gates": {"bias": bad}})
    assert message in str(err.value)


def test_bias_report_shows_the_per_group_table():
    from tasks.gates.reports import gate_markdown

    pred = make_pred(rows("a", tp=60, tn=40), rows("b", tp=30, tn=70), rows("tiny", tp=2, tn=3))
    md = gate_markdown(bias_gate(pred, cfg(positive_label="spam", min_group_size=10)))
    assert "### Per group (class `spam`)" in md
    assert "| a | 100 | 1.0000 | 0.6000 | 1.0000 | 0.0000 | yes |" in md
    assert "| b | 100 | 1.0000 | 0.3000 |" in md
    assert "| tiny | 5 |" in md and "| no (" in md  # small groups are listed, not judged


def test_the_flip_rate_is_judged_on_its_wilson_interval_like_the_group_gaps():
    """3 flips in 37 swaps (0.081) against a 0.05 threshold: beyond on the point estimate, but the 95% Wilson
    interval reaches below 0.05, so under judge_on: ci_bound it is reported as possibly noise, not failed; judged on
    the point it fails. Many flips fail either way."""
    from tasks.core.metrics import wilson_interval
    from tasks.gates.bias import _counterfactual_checks

    low, high = wilson_interval(3, 37, 0.95)
    assert low == pytest.approx(0.0280, abs=1e-3) and high == pytest.approx(0.2129, abs=1e-3)
    assert wilson_interval(0, 10, 0.95)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(10, 10, 0.95)[1] == 1.0
    cf = {"n_swaps": 37, "flip_rate": 0.0811, "mean_prob_change": 0.01, "flip_rate_ci": [round(low, 4), round(high, 4)],
          "by_category": {"gender": {"flip_rate": 0.0811}}}
    on_ci = _counterfactual_checks(cf, cfg(judge_on="ci_bound", max_counterfactual_flip_rate=0.05))[0]
    assert on_ci.passed and "Wilson CI" in on_ci.detail and "possibly noise" in on_ci.detail
    on_point = _counterfactual_checks(cf, cfg(judge_on="point", max_counterfactual_flip_rate=0.05))[0]
    assert not on_point.passed
