"""Regression gate, metrics and baselines on constructed predictions: each rule firing and not firing."""

from __future__ import annotations

import json

import pytest

from tasks.gates.baselines import evaluate_baselines, fit_baselines
from tasks.core.config import RegressionGateConfig
from tasks.core.config_files import config_from_dict
from tasks.core.errors import InputError
from tasks.core.names import GateOutcome
from tasks.gates.regression import classification_metrics, regression_gate

LABELS = ["a", "b", "c"]
Y_TRUE = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
CFG = RegressionGateConfig()


def predicted(wrong: dict[str, int], labels: list[str] = LABELS, y_true: list[str] = Y_TRUE) -> dict:
    """Metrics of a model that gets ``wrong[c]`` rows of class c wrong (predicting the next label)."""
    y_pred, seen = [], dict.fromkeys(labels, 0)
    for y in y_true:
        if seen.get(y, 0) < wrong.get(y, 0):
            y_pred.append(next(lab for lab in labels if lab != y))
        else:
            y_pred.append(y if y in labels else labels[0])
        seen[y] = seen.get(y, 0) + 1
    return classification_metrics(y_true, y_pred, labels)


def check(decision, name: str):
    return next(c for c in decision.checks if c.name == name)


# --- metrics ------------------------------------------------------------------------------------------------

def test_classification_metrics_values():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3, abs=1e-6),
                                   "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2, abs=1e-6)
    assert m["confusion_matrix"] == {"labels": ["a", "b"], "matrix": [[1, 1], [0, 2]]}
    json.dumps(m)


def test_metrics_of_a_model_that_knows_other_labels():
    # the model knows a, b, z; the test split also has c (it can never get those right); z never occurs
    m = classification_metrics(["a", "b", "c"], ["a", "b", "a"], ["a", "b", "z"])
    assert m["accuracy"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["unknown_true_labels"] == {"c": 1}
    assert m["per_class"]["z"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2, abs=1e-6)  # z is left out of the average


def test_predicting_an_unknown_label_is_an_input_error():
    with pytest.raises(InputError, match="not among the model's labels"):
        classification_metrics(["a"], ["q"], ["a", "b"])


# --- champion -----------------------------------------------------------------------------------------------

def test_no_champion_is_reported_and_baseline_still_judged():
    d = regression_gate(predicted({}), None, {"majority": predicted({"b": 10, "c": 10})}, None, None, CFG)
    first = check(d, "vs champion: macro_f1")
    assert not first.judged and first.detail == "no champion yet"
    assert d.outcome == GateOutcome.PASSED and check(d, "vs baseline: macro_f1").passed


def test_nothing_to_compare_is_skipped():
    d = regression_gate(predicted({}), None, {}, None, None, CFG)
    assert d.outcome == GateOutcome.SKIPPED and "no champion yet" in d.reason


@pytest.mark.parametrize("cand_wrong, champ_wrong, passed", [
    ({"a": 1}, {"a": 4}, True),             # candidate better than the champion
    ({"a": 4, "b": 4}, {"a": 1}, False),    # candidate clearly worse
])
def test_primary_metric_vs_champion(cand_wrong, champ_wrong, passed):
    d = regression_gate(predicted(cand_wrong), predicted(champ_wrong), {}, None, None, CFG)
    c = check(d, "vs champion: macro_f1")
    assert c.passed is passed and d.failed is not passed
    assert d.details["champion"]["primary"]["change"] == pytest.approx(c.value - d.details["table"][1]["macro_f1"])


@pytest.mark.parametrize("champion, tolerance", [(0.80, 0.01), (0.53, 0.05)])  # 0.53 - 0.05 > 0.48 in floats
def test_a_drop_of_exactly_the_tolerance_passes(champion, tolerance):
    cfg = RegressionGateConfig(champion_tolerance=tolerance)
    champ = {**predicted({}), "macro_f1": champion}
    cand = {**predicted({}), "macro_f1": round(champion - tolerance, 2)}
    assert check(regression_gate(cand, champ, {}, None, None, cfg), "vs champion: macro_f1").passed
    cand["macro_f1"] -= 0.0001
    assert not check(regression_gate(cand, champ, {}, None, None, cfg), "vs champion: macro_f1").passed


def test_per_class_recall_drop_fails_even_when_the_headline_holds():
    champ, cand = predicted({"a": 2}), predicted({"c": 2})  # same macro F1 overall, class c's recall -0.2
    d = regression_gate(cand, champ, {}, None, None, CFG)
    assert check(d, "vs champion: macro_f1").passed
    assert not check(d, "vs champion: recall[c]").passed
    assert check(d, "vs champion: recall[a]").passed
    assert d.failed and "recall[c]" in d.reason
    loose = regression_gate(cand, champ, {}, None, None, RegressionGateConfig(per_class_recall_tolerance=0.25))
    assert loose.outcome == GateOutcome.PASSED


def test_champion_trained_on_other_labels_compares_shared_classes():
    champ = predicted({}, labels=["a", "b", "old"])  # never saw c
    d = regression_gate(predicted({}), champ, {}, None, None, CFG)
    names = [c.name for c in d.checks]
    assert "vs champion: recall[a]" in names and "vs champion: recall[c]" not in names
    report = check(d, "vs champion: label sets")
    assert not report.judged and "['c']" in report.detail and "['old']" in report.detail
    assert d.details["champion"]["only_champion_labels"] == ["old"]
    assert d.outcome == GateOutcome.PASSED


def test_per_group_accuracy_drop_vs_champion():
    groups = ["g1"] * 15 + ["g2"] * 15
    y_pred_champ = list(Y_TRUE)
    y_pred_cand = ["b"] * 10 + Y_TRUE[10:]  # all of class a wrong: g1 (rows 0-14) drops from 1.0 to 1/3
    cfg = RegressionGateConfig(min_group_size=10, champion_tolerance=1.0, per_class_recall_tolerance=1.0)
    d = regression_gate(classification_metrics(Y_TRUE, y_pred_cand, LABELS, groups),
                        classification_metrics(Y_TRUE, y_pred_champ, LABELS, groups), {}, None, None, cfg)
    assert not check(d, "vs champion: accuracy[group g1]").passed
    assert check(d, "vs champion: accuracy[group g2]").passed
    small = regression_gate(classification_metrics(Y_TRUE, y_pred_cand, LABELS, groups),
                            classification_metrics(Y_TRUE, y_pred_champ, LABELS, groups), {}, None, None,
                            cfg.model_copy(update={"min_group_size": 30}))
    assert small.outcome == GateOutcome.PASSED and not check(small, "vs champion: small groups").judged


# --- baselines, overfitting, golden set ---------------------------------------------------------------------

@pytest.mark.parametrize("margin, passed", [(0.0, False), (-0.5, True)])
def test_baseline_that_beats_the_candidate_fails_it(margin, passed):
    baselines = {"majority": predicted({"b": 10, "c": 10}), "tfidf_logreg": predicted({"a": 1})}
    d = regression_gate(predicted({"a": 5}), None, baselines, None, None,
                        RegressionGateConfig(min_margin_over_baseline=margin))
    c = check(d, "vs baseline: macro_f1")
    assert c.passed is passed and "'tfidf_logreg'" in c.detail
    assert d.details["baselines"]["best"] == "tfidf_logreg"
    assert ("to beat it, try more epochs" in c.detail) is not passed  # the knobs to try, only when it lost


@pytest.mark.parametrize("val_wrong, passed", [({"a": 2}, True), ({"a": 5, "b": 5, "c": 5}, False)])
def test_overfit_gap(val_wrong, passed):
    val = predicted(val_wrong)
    d = regression_gate(predicted({}), None, {}, predicted({}), val, CFG)  # train macro F1 is 1.0
    c = check(d, "train-validation gap")
    assert c.passed is passed and c.threshold == 0.15 and d.failed is not passed
    assert d.details["overfit"]["gap"] == pytest.approx(1.0 - val["macro_f1"], abs=1e-6)


def test_golden_set_drop_fails_and_without_champion_is_reported():
    golden = {"candidate": predicted({"a": 5}), "champion": predicted({})}
    d = regression_gate(predicted({}), predicted({}), {}, None, None, CFG, golden=golden)
    assert not check(d, "golden set: macro_f1").passed and d.failed
    alone = regression_gate(predicted({}), None, {}, None, None, CFG, golden={"candidate": predicted({}),
                                                                               "champion": None})
    assert not check(alone, "golden set: macro_f1").judged


def test_decision_is_json_serialisable():
    d = regression_gate(predicted({}), predicted({"a": 1}), {"majority": predicted({"b": 10, "c": 10})},
                        predicted({}), predicted({"b": 1}), CFG)
    assert json.loads(json.dumps(d.to_dict()))["outcome"] == "passed"


# --- baselines ----------------------------------------------------------------------------------------------

TRAIN = [("cheap pills offer", "spam"), ("win money now", "spam"), ("free offer click", "spam"),
         ("meeting at noon", "ham"), ("see you at lunch", "ham"), ("project notes attached", "ham")] * 4


def test_baselines_fit_and_evaluate_on_the_test_split():
    texts, labels = zip(*TRAIN)
    fitted = fit_baselines(list(texts), list(labels))
    scores = evaluate_baselines(fitted, ["free pills offer", "lunch at noon"], ["spam", "ham"], ["ham", "spam"])
    assert set(scores) == {"majority", "tfidf_logreg"}
    assert scores["tfidf_logreg"]["accuracy"] == 1.0
    assert scores["majority"]["accuracy"] == 0.5 and scores["majority"]["labels"] == ["ham", "spam"]


def test_baseline_needs_two_classes():
    with pytest.raises(InputError, match="at least two classes"):
        fit_baselines(["a", "b"], ["x", "x"])


@pytest.mark.parametrize("bad, message", [
    ({"champion_tolerance": -0.1}, "must be in [0, 1]"),
    ({"baselines": ["majority", "majority"]}, "lists a baseline twice"),
    ({"primary_metric": "auc"}, "gates.regression.primary_metric"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(InputError) as err:
        config_from_dict({"data": {"path": "x.csv"}, "gates": {"regression": bad}})
    assert message in str(err.value)
