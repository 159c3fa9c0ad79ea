"""The data validation gate: a Great Expectations suite run on all splits before training.

Derived columns (normalised text, split, leakage flag, PII findings) are computed in pandas; every
judgement is a built-in GX expectation whose result becomes one ``Check`` of the gate decision.
The GX result JSON and a Data Docs site are written under the run's output folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import Column

from tasks.core.config import ValidationGateConfig
from tasks.data.splits import GROUP, LABEL, SPLIT, TEXT, DatasetSplits, normalize_text
from tasks.gates.decision import Check, GateDecision
from validation.pii import FINDERS

GATE = "validation"
SUITE_NAME = "adaptrail_validation"
RESULT_JSON = "validation_result.json"
DOCS_DIR = "data_docs"
DOCS_SITE = "adaptrail"

# Derived columns (added to the validated frame, never to the training data).
ROW = "row"  # position within its split
TEXT_NORM = "text_normalized"
IN_TRAIN = "text_in_train"
PII_PREFIX = "pii_"
PII_RESPONSE_PREFIX = "pii_response_"  # causal_lm: PII findings in the response (label) column

N_EXAMPLES = 3
EXAMPLE_CHARS = 60


@dataclass
class ValidationOutcome:
    decision: GateDecision
    failures: list[str]
    json_path: Path
    html_path: Path


# ---- the suite ------------------------------------------------------------------------------------


def _rule(cls: type[gxe.Expectation], check: str, rule: str, about: str, example: str = "value",
          **kwargs: Any) -> gxe.Expectation:
    """A named expectation: ``rule`` is what Data Docs shows, ``about`` says what an unexpected row is,
    ``example`` what a failure line quotes (the value, the row's text, its length, or where the row is)."""
    return cls(description=f"{check}: {rule}",
               meta={"check": check, "about": about, "example": example}, **kwargs)


def _text_rules(column: str, what: str, lo: int, hi: int) -> list[gxe.Expectation]:
    """A free-text column (the text; a causal LM's prompt and response): a string, present, non-empty, in length."""
    return [
        _rule(gxe.ExpectColumnValuesToBeOfType, f"{what}_is_string", f"every {what} is a string",
              f"{what} values are not strings", "type", column=column, type_="str"),
        _rule(gxe.ExpectColumnValuesToNotBeNull, f"{what}_not_null", f"no {what} is null", f"{what}s are null", "row",
              column=column),
        _rule(gxe.ExpectColumnValuesToMatchRegex, f"{what}_not_empty", f"no {what} is empty or whitespace-only",
              f"{what}s are empty or whitespace-only", "row", column=column, regex=r"\S"),
        _rule(gxe.ExpectColumnValueLengthsToBeBetween, f"{what}_length", f"every {what} has {lo} to {hi} characters",
              f"{what}s are shorter than {lo} or longer than {hi} characters", "length",
              column=column, min_value=lo, max_value=hi),
    ]


def build_suite(cfg: ValidationGateConfig, labels: list[str], has_group: bool,
                task: str = "sequence_classification") -> gx.ExpectationSuite:
    """One named expectation per rule of the gate, thresholds taken from the config.

    causal_lm: the prompt (``text`` column) and the response (``label`` column) are both checked as free text
    (a response may be one character); there is no label set and no per-class minimum.
    """
    causal = task == "causal_lm"
    required = [TEXT, LABEL, GROUP] if has_group else [TEXT, LABEL]
    lo, hi = cfg.min_text_length, cfg.max_text_length
    expectations = [
        _rule(gxe.ExpectTableColumnsToMatchSet, "required_columns", f"the data has the columns {required}",
              "required columns are missing", column_set=required, exact_match=False),
        *(_text_rules(TEXT, "prompt", lo, hi) + _text_rules(LABEL, "response", 1, hi) if causal else
          _text_rules(TEXT, "text", lo, hi) + [
              _rule(gxe.ExpectColumnValuesToNotBeNull, "label_not_null", "no label is null", "labels are null", "row",
                    column=LABEL),
              _rule(gxe.ExpectColumnValuesToBeInSet, "label_in_set", f"every label is one of {labels}",
                    f"labels are outside the label set {labels}", column=LABEL, value_set=list(labels))]),
        _rule(gxe.ExpectColumnProportionOfUniqueValuesToBeBetween, "duplicate_share",
              f"at most {cfg.max_duplicate_share:.2%} of texts (all splits, normalised) repeat an earlier text",
              "texts repeat an earlier text (after normalisation)",
              column=TEXT_NORM, min_value=round(1.0 - cfg.max_duplicate_share, 12)),
    ]
    if cfg.check_leakage:
        expectations.append(_rule(
            gxe.ExpectColumnValuesToBeInSet, "no_text_leakage", "no validation/test text (normalised) is in train",
            "test/validation texts also appear in train", "text",
            column=IN_TRAIN, value_set=[False], row_condition=Column(SPLIT) != "train"))
    for label in [] if causal else labels:
        expectations.append(_rule(
            gxe.ExpectTableRowCountToBeBetween, f"min_rows_per_class[{label}]",
            f"at least {cfg.min_rows_per_class} training rows of class {label!r}",
            f"training rows of class {label!r}", min_value=cfg.min_rows_per_class,
            row_condition=(Column(SPLIT) == "train") & (Column(LABEL) == label)))
    for kind in cfg.pii_checks:
        what = "an e-mail address" if kind == "email" else f"a {kind} number"
        expectations.append(_rule(
            gxe.ExpectColumnValuesToBeNull, f"pii_{kind}", f"at most {cfg.max_pii_share:.2%} of texts contain {what}",
            f"texts contain {what}", column=PII_PREFIX + kind, mostly=round(1.0 - cfg.max_pii_share, 12)))
        if causal:
            expectations.append(_rule(
                gxe.ExpectColumnValuesToBeNull, f"pii_{kind}[response]",
                f"at most {cfg.max_pii_share:.2%} of responses contain {what}", f"responses contain {what}",
                column=PII_RESPONSE_PREFIX + kind, mostly=round(1.0 - cfg.max_pii_share, 12)))
    # The constructor, unlike add_expectation, needs no active data context.
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations,
                               notes="adaptrail validation gate: every rule must hold before training")


# ---- the frame it runs on -------------------------------------------------------------------------


def validation_frame(splits: DatasetSplits, pii_kinds: list[str], task: str = "sequence_classification"
                     ) -> pd.DataFrame:
    """All splits in one frame, with the derived columns the suite judges (causal_lm: PII in responses too)."""
    parts = [df.assign(**{SPLIT: name, ROW: range(len(df))}) for name, df in splits.frames().items()]
    frame = pd.concat(parts, ignore_index=True)
    texts = frame[TEXT] if TEXT in frame else pd.Series([None] * len(frame), dtype=object)
    frame[TEXT_NORM] = [None if _is_null(t) else normalize_text(t) for t in texts]
    train_texts = set(frame.loc[frame[SPLIT] == "train", TEXT_NORM].dropna())
    frame[IN_TRAIN] = [t is not None and t in train_texts for t in frame[TEXT_NORM]]
    for kind in pii_kinds:
        find = FINDERS[kind]
        frame[PII_PREFIX + kind] = [find(t) if isinstance(t, str) else None for t in texts]
        if task == "causal_lm":
            frame[PII_RESPONSE_PREFIX + kind] = [find(t) if isinstance(t, str) else None for t in frame[LABEL]]
    return frame


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ---- running it -----------------------------------------------------------------------------------


def run_validation(splits: DatasetSplits, cfg: ValidationGateConfig, out_dir: Path,
                   task: str = "sequence_classification") -> ValidationOutcome:
    """Run the suite on all splits; write the result JSON and Data Docs; never raises on failed data."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = validation_frame(splits, list(cfg.pii_checks), task)
    suite = build_suite(cfg, splits.labels, splits.has_group, task)

    context = _context(out_dir / DOCS_DIR)
    batch = (context.data_sources.add_pandas("adaptrail").add_dataframe_asset("splits")
             .add_batch_definition_whole_dataframe("all_splits"))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="validation_gate", data=batch, suite=context.suites.add(suite)))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="validation_gate", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20}))
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    ((result_id, result),) = run.run_results.items()

    json_path = out_dir / RESULT_JSON
    json_path.write_text(json.dumps(result.to_json_dict(), indent=2, default=str), encoding="utf-8")
    html_path = _docs_page(context, result_id)

    checks = [_check(r, frame) for r in _in_suite_order(result, suite)]
    failures = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
    details = {"rows": {name: len(df) for name, df in splits.frames().items()},
               "labels": list(splits.labels), "json_path": str(json_path), "html_path": str(html_path)}
    decision = GateDecision.from_checks(GATE, checks, details=details)
    return ValidationOutcome(decision=decision, failures=failures, json_path=json_path, html_path=html_path)


def _context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site is a folder under the run's output."""
    context = gx.get_context(mode="ephemeral")
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(DOCS_SITE, {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def _docs_page(context: Any, result_id: Any) -> Path:
    """The Data Docs page of this validation result (a file path a person can open)."""
    (site,) = context.get_docs_sites_urls(resource_identifier=result_id, site_name=DOCS_SITE)
    return Path(site["site_url"].removeprefix("file://"))


def _in_suite_order(result: ExpectationSuiteValidationResult, suite: gx.ExpectationSuite
                    ) -> list[ExpectationValidationResult]:
    by_check = {r.expectation_config.meta["check"]: r for r in result.results}
    return [by_check[e.meta["check"]] for e in suite.expectations]


# ---- reading the results --------------------------------------------------------------------------


def _check(r: ExpectationValidationResult, frame: pd.DataFrame) -> Check:
    """One GX result as a gate check: the observed value, the threshold, and a line a person can act on."""
    meta, kwargs, res = r.expectation_config.meta, r.expectation_config.kwargs, r.result or {}
    name, about = meta["check"], meta["about"]
    if r.exception_info and r.exception_info.get("raised_exception"):
        msg = r.exception_info.get("exception_message") or "unknown error"
        return Check(name, False, None, None, f"could not be evaluated: {msg}")
    kind = r.expectation_config.type
    if kind == "expect_table_columns_to_match_set":
        missing = sorted(set(kwargs["column_set"]) - set(res.get("observed_value") or []))
        detail = f"{about}: {missing}" if missing else "all required columns present"
        return Check(name, bool(r.success), missing, list(kwargs["column_set"]), detail)
    if kind == "expect_table_row_count_to_be_between":
        n = int(res.get("observed_value") or 0)
        return Check(name, bool(r.success), n, kwargs["min_value"],
                     f"{n} {about}, needs at least {kwargs['min_value']}")
    if kind == "expect_column_proportion_of_unique_values_to_be_between":
        share = 1.0 - float(res.get("observed_value") or 0.0)
        limit = 1.0 - kwargs["min_value"]
        repeated = frame[TEXT_NORM].notna() & frame[TEXT_NORM].duplicated(keep="first")
        detail = (f"{int(repeated.sum())} of {int(frame[TEXT_NORM].notna().sum())} {about} (share {share:.2%}, "
                  f"allowed {limit:.2%}){_examples([_short(t) for t in frame.loc[repeated, TEXT]])}")
        return Check(name, bool(r.success), round(share, 6), round(limit, 6), detail)
    return _map_check(name, about, meta["example"], r.success, res, kwargs.get("mostly", 1.0), frame)


def _map_check(name: str, about: str, example: str, success: bool, res: dict[str, Any], mostly: float,
               frame: pd.DataFrame) -> Check:
    """Checks that count offending rows: how many (value), how many allowed (threshold), a few of them."""
    count, total = int(res.get("unexpected_count") or 0), int(res.get("element_count") or 0)
    allowed = int((1.0 - mostly) * total + 1e-9)
    values, index = res.get("partial_unexpected_list") or [], res.get("partial_unexpected_index_list") or []
    if example == "row":
        quoted = [f"{frame.at[i, SPLIT]} row {frame.at[i, ROW]}" for i in index]
    elif example == "text":
        quoted = [_short(frame.at[i, TEXT]) for i in index]
    elif example == "length":
        quoted = [f"{_short(v)} ({len(str(v))} chars)" for v in values]
    elif example == "type":
        quoted = [f"{v!r} ({type(v).__name__})" for v in values]
    else:
        quoted = [_short(v) for v in values]
    share = f" ({count / total:.2%} of {total}" + (f", allowed {1.0 - mostly:.2%})" if mostly < 1 else ")")
    detail = f"{count} {about}{share if total else ''}{_examples(quoted) if count else ''}"
    return Check(name, bool(success), count, allowed, detail)


def _examples(quoted: list[str]) -> str:
    shown = list(dict.fromkeys(quoted))[:N_EXAMPLES]
    return f" (e.g. {', '.join(shown)})" if shown else ""


def _short(value: Any) -> str:
    s = str(value)
    return repr(s if len(s) <= EXAMPLE_CHARS else s[: EXAMPLE_CHARS - 3] + "...")
