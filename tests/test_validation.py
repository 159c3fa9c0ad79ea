"""The validation gate: clean data passes; each rule fails on data made to break it and names itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.config import ValidationGateConfig
from tasks.data.splits import DatasetSplits
from tasks.core.names import GateOutcome
from validation.pii import find_card, find_email, find_phone, luhn_valid
from validation.suite import ValidationOutcome, build_suite, run_validation

WORDS = ["apple", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "indigo", "jasper"]
CFG = dict(min_rows_per_class=3, max_duplicate_share=0.1)


def _frame(rows: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label"], dtype=object)


def clean_splits() -> DatasetSplits:
    """10 distinct, PII-free texts: train 3 ham + 3 spam, validation 2, test 2."""
    texts = [f"a short note about {w} trees" for w in WORDS]
    labels = ["ham", "spam"] * 5
    rows = list(zip(texts, labels))
    return DatasetSplits(train=_frame(rows[:6]), validation=_frame(rows[6:8]), test=_frame(rows[8:]),
                         labels=["ham", "spam"], digest="", source="test", source_digest="", has_group=False)


def _run(splits: DatasetSplits, tmp_path: Path, **cfg: object) -> ValidationOutcome:
    return run_validation(splits, ValidationGateConfig(**{**CFG, **cfg}), tmp_path / "validation")


def _failed(outcome: ValidationOutcome) -> set[str]:
    return {c.name for c in outcome.decision.failed_checks}


def test_clean_data_passes_and_writes_json_and_data_docs(tmp_path: Path) -> None:
    out = _run(clean_splits(), tmp_path)
    assert out.decision.outcome == GateOutcome.PASSED, out.failures
    assert out.decision.gate == "validation" and out.failures == []
    assert out.json_path == tmp_path / "validation" / "validation_result.json"
    result = json.loads(out.json_path.read_text())
    assert result["success"] is True and len(result["results"]) == len(out.decision.checks)
    assert out.html_path.suffix == ".html" and out.html_path.is_relative_to(tmp_path)
    html = out.html_path.read_text()
    assert "no_text_leakage" in html and "pii_phone" in html
    names = [c.name for c in out.decision.checks]
    assert len(names) == len(set(names))
    assert {"min_rows_per_class[ham]", "min_rows_per_class[spam]", "duplicate_share", "pii_card"} <= set(names)


def _set(split: str, row: int, text: str | None = "unchanged", label: str | None = "unchanged"
         ) -> Callable[[DatasetSplits], None]:
    def change(s: DatasetSplits) -> None:
        df = s.frames()[split]
        if text != "unchanged":
            df.at[row, "text"] = text
        if label != "unchanged":
            df.at[row, "label"] = label
    return change


def _add_label(label: str) -> Callable[[DatasetSplits], None]:
    def change(s: DatasetSplits) -> None:
        s.labels = [*s.labels, label]
    return change


# (case id, change to clean data, config overrides, the checks that must fail, words the failure line must hold)
BROKEN = [
    ("leakage", _set("test", 1, "A SHORT note about   APPLE trees"), {"max_duplicate_share": 0.5},
     {"no_text_leakage"}, ["1 test/validation texts also appear in train", "APPLE"]),
    ("duplicates", _set("train", 1, "a short note about apple trees") , {"max_duplicate_share": 0.05},
     {"duplicate_share"}, ["1 of 10", "share 10.00%", "allowed 5.00%"]),
    ("email", _set("train", 0, "write to jane.doe@example.org today"), {}, {"pii_email"},
     ["e-mail", "j***@example.org"]),
    ("phone", _set("validation", 0, "call me on +44 7700 900123 tonight"), {}, {"pii_phone"},
     ["phone", "+44 77** ****23"]),
    ("card", _set("test", 0, "my card is 4111-1111-1111-1111 ok"), {}, {"pii_card"},
     ["card", "****-****-****-1111"]),
    ("label outside the set", _set("test", 0, label="hma"), {}, {"label_in_set"}, ["'hma'"]),
    ("null label", _set("validation", 1, label=None), {}, {"label_not_null"}, ["validation row 1"]),
    ("null text", _set("train", 2, None), {}, {"text_not_null"}, ["1 texts are null", "train row 2"]),
    ("empty text", _set("test", 1, " \t "), {}, {"text_not_empty"}, ["whitespace-only", "test row 1"]),
    ("too long text", _set("train", 3, "x" * 81), {"max_text_length": 80}, {"text_length"},
     ["longer than 80", "(81 chars)"]),
    ("too short text", _set("train", 3, "x"), {}, {"text_length"}, ["shorter than 2", "'x' (1 chars)"]),
    ("non-string text", _set("train", 3, 12345), {}, {"text_is_string"}, ["12345 (int)"]),
    ("too few rows of a class", _set("train", 1, label="ham"), {}, {"min_rows_per_class[spam]"},
     ["2 training rows of class 'spam', needs at least 3"]),
    ("a label with no rows", _add_label("other"), {}, {"min_rows_per_class[other]"},
     ["0 training rows of class 'other'"]),
]


@pytest.mark.parametrize("change, cfg, expected, words", [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_each_rule_fails_on_data_that_breaks_it_and_names_itself(
        tmp_path: Path, change: Callable[[DatasetSplits], None], cfg: dict, expected: set[str], words: list[str]
) -> None:
    splits = clean_splits()
    change(splits)
    out = _run(splits, tmp_path, **cfg)
    assert out.decision.outcome == GateOutcome.FAILED
    assert _failed(out) == expected, out.failures
    assert len(out.failures) == len(expected)
    line = out.failures[0]
    assert line.startswith(f"{next(iter(expected))}: ")
    for word in words:
        assert word in line, line
    assert out.json_path.is_file() and out.html_path.is_file()


def test_thresholds_from_the_config_allow_what_they_say(tmp_path: Path) -> None:
    splits = clean_splits()
    _set("train", 1, "a short note about apple trees")(splits)  # 1 of 10 texts repeats: share 0.10
    _set("test", 0, "call 0845 281 0075 now")(splits)  # 1 of 10 texts has a phone number
    assert _failed(_run(splits, tmp_path, max_duplicate_share=0.1, max_pii_share=0.1)) == set()
    assert _failed(_run(splits, tmp_path, max_duplicate_share=0.09, max_pii_share=0.09)) == {
        "duplicate_share", "pii_phone"}


def test_leakage_and_pii_checks_can_be_switched_off(tmp_path: Path) -> None:
    splits = clean_splits()
    _set("test", 0, "a short note about apple trees")(splits)
    _set("train", 0, "mail a@b.io")(splits)
    out = _run(splits, tmp_path, check_leakage=False, pii_checks=[], max_duplicate_share=0.5)
    assert out.decision.outcome == GateOutcome.PASSED, out.failures
    assert not any(c.name in ("no_text_leakage", "pii_email") for c in out.decision.checks)


def test_group_column_is_required_when_the_data_has_groups(tmp_path: Path) -> None:
    splits = clean_splits()
    splits.has_group = True
    out = _run(splits, tmp_path)
    assert _failed(out) == {"required_columns"}
    assert "['group']" in out.failures[0]
    for df in splits.frames().values():
        df["group"] = "none"
    assert _run(splits, tmp_path / "again").decision.outcome == GateOutcome.PASSED


def test_build_suite_names_one_expectation_per_rule() -> None:
    cfg = ValidationGateConfig(pii_checks=["email", "card"], check_leakage=False)
    suite = build_suite(cfg, ["a", "b", "c"], has_group=True)
    names = [e.meta["check"] for e in suite.expectations]
    assert len(names) == len(set(names))
    assert [n for n in names if n.startswith(("min_rows", "pii_"))] == [
        "min_rows_per_class[a]", "min_rows_per_class[b]", "min_rows_per_class[c]", "pii_email", "pii_card"]
    assert "no_text_leakage" not in names
    columns = next(e for e in suite.expectations if e.meta["check"] == "required_columns")
    assert set(columns.column_set) == {"text", "label", "group"}


@pytest.mark.parametrize("text, email, phone, card", [
    ("Call 08452810075over18's", None, "0845*****75", None),
    ("Text FA to 87121 to receive entry", None, None, None),
    ("(555) 123-4567 after 6", None, "(555) 1**-**67", None),
    ("born 21st May 2005, 12/03/2024 10:30", None, None, None),
    ("pay with 4111 1111 1111 1111", None, None, "**** **** **** 1111"),
    ("pay with 4111 1111 1111 1112", None, None, None),  # fails the Luhn check
    ("mail John.Smith+x@mail.example.co.uk", "J***@mail.example.co.uk", None, None),
    ("see you @ 5", None, None, None),
])
def test_pii_finders_mask_what_they_find(text: str, email: str | None, phone: str | None, card: str | None) -> None:
    assert (find_email(text), find_phone(text), find_card(text)) == (email, phone, card)


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")
