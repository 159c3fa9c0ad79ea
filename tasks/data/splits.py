"""Load a labelled text dataset, split it deterministically (stratified), and fingerprint it.

Downstream code sees canonical column names (``text``, ``label``, ``group``); the config says which
columns of the user's file they come from.
"""

from __future__ import annotations

import io

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.config import DataConfig
from tasks.core.canonical import file_sha256
from tasks.core.errors import InputError

TEXT, LABEL, GROUP, SPLIT = "text", "label", "group", "split"
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                  "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}
_WS = re.compile(r"\s+")


@dataclass
class DatasetSplits:
    """The data actually used, split, with its content digest and how it was made."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    labels: list[str]
    digest: str
    source: str
    source_digest: str
    has_group: bool
    dedup: dict[str, Any] = field(default_factory=dict)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def profile(self) -> dict[str, Any]:
        """The dataset card's facts: source and digests, rows per split and per class, the group distribution
        and text lengths per split (what the data was, not what a person says it was)."""
        out: dict[str, Any] = {"source": self.source, "source_digest": self.source_digest, "digest": self.digest,
                               "labels": list(self.labels), "has_group": self.has_group, "dedup": self.dedup,
                               "splits": {}}
        for name, frame in self.frames().items():
            lengths = frame[TEXT].astype(str).str.len() if TEXT in frame else pd.Series(dtype=float)
            out["splits"][name] = {
                "rows": int(len(frame)),
                "per_class": {str(k): int(v) for k, v in frame[LABEL].value_counts().sort_index().items()}
                if LABEL in frame else {},
                "per_group": {str(k): int(v) for k, v in frame[GROUP].value_counts().sort_index().items()}
                if self.has_group and GROUP in frame else {},
                "text_chars": {"min": int(lengths.min()), "median": float(lengths.median()),
                               "max": int(lengths.max())} if len(lengths) else {},
            }
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "rows": {k: len(v) for k, v in self.frames().items()},
            "labels": self.labels,
            "has_group": self.has_group,
            "dedup": self.dedup,
        }


def normalize_text(text: Any) -> str:
    """The form used for duplicate and leakage checks: casefolded, whitespace collapsed."""
    return _WS.sub(" ", str(text)).strip().casefold()


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf_disk"
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    for ext, name in ((".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"),
                      (".pq", "parquet")):
        if suffix.startswith(ext):
            return name
    raise InputError(f"cannot tell the format of {path} from its extension; set data.format to csv, jsonl, "
                     "parquet or hf_disk")


def _check_utf8(path: Path) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"{path} is not valid UTF-8 (byte {err.start}, line {line}); re-save the file as UTF-8 "
                         "(e.g. iconv -f latin1 -t utf-8)") from None


def read_table(path: Path, fmt: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """Read the raw table; returns (frame, given split column or None for hf_disk splits)."""
    if not path.exists():
        raise InputError(f"data file not found: {path} (set data.path to an existing CSV/JSONL/Parquet file or "
                         "a datasets.save_to_disk directory)")
    fmt = _detect_format(path, fmt)
    try:
        if fmt == "hf_disk":
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                parts = []
                for name, part in ds.items():
                    df = part.to_pandas()
                    df[SPLIT] = name
                    parts.append(df)
                frame = pd.concat(parts, ignore_index=True)
                return frame.drop(columns=[SPLIT]), frame[SPLIT]
            return ds.to_pandas(), None
        if path.is_dir():
            raise InputError(f"{path} is a directory; data.format={fmt} needs a file")
        if fmt in ("csv", "jsonl"):
            _check_utf8(path)
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8"), None
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8"), None
        if fmt == "parquet":
            return pd.read_parquet(path), None
    except InputError:
        raise
    except (FileNotFoundError, IsADirectoryError) as err:
        raise InputError(f"cannot read {path}: {err}") from None
    except Exception as err:  # parser errors of pandas/pyarrow/datasets
        raise InputError(f"cannot read {path} as {fmt}: {type(err).__name__}: {err}; check data.format and the "
                         "file's contents") from None
    raise InputError(f"unknown data.format {fmt!r}")


def _wanted(cfg: DataConfig) -> dict[str, str]:
    """The file's columns the run reads -> their canonical names."""
    wanted = {cfg.text_column: TEXT, cfg.label_column: LABEL}
    if cfg.group_column:
        wanted[cfg.group_column] = GROUP
    if cfg.split_column:
        wanted[cfg.split_column] = SPLIT
    return wanted


def _require_columns(columns: list[str], wanted: dict[str, str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise InputError(f"column(s) {missing} not in the data (columns are {columns}); set "
                         "data.text_column / data.label_column / data.group_column / data.split_column to match")


def header_columns(path: Path, fmt: str) -> list[str] | None:
    """The column names of a CSV, JSONL or Parquet file, read from its header (first line, schema) only; None for
    a datasets directory (its columns are known once it is loaded)."""
    fmt = _detect_format(path, fmt)
    try:
        if fmt == "csv":
            return list(pd.read_csv(path, nrows=0, encoding="utf-8").columns)
        if fmt == "jsonl":
            with open(path, encoding="utf-8") as fh:
                first = next((line for line in fh if line.strip()), "")
            return list(pd.read_json(io.StringIO(first), lines=True).columns) if first else []
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
    except Exception:  # an unreadable file: the full read says why, with the fix
        return None
    return None


def check_columns(cfg: DataConfig, columns: list[str]) -> None:
    """Refuse data without the columns the config names (before any server starts: the CLI's preflight)."""
    _require_columns(columns, _wanted(cfg))


def _canonical(frame: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    wanted = _wanted(cfg)
    _require_columns(list(frame.columns), wanted)
    out = frame[list(wanted)].rename(columns=wanted).reset_index(drop=True)
    out[TEXT] = out[TEXT].astype(object).where(out[TEXT].notna(), None)
    out[TEXT] = [t if t is None or isinstance(t, str) else str(t) for t in out[TEXT]]
    out[LABEL] = [None if pd.isna(v) else str(v) for v in out[LABEL]]
    if GROUP in out:
        out[GROUP] = ["none" if pd.isna(v) or str(v) == "" else str(v) for v in out[GROUP]]
    return out


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keep the first row of each normalised text; report how many went and how many disagreed on labels."""
    key = frame[TEXT].map(lambda t: None if t is None else normalize_text(t))
    dup = key.duplicated(keep="first") & key.notna()
    conflicting = int(frame[key.notna()].assign(_k=key).groupby("_k")[LABEL].nunique().gt(1).sum())
    kept = frame[~dup].reset_index(drop=True)
    return kept, {"enabled": True, "removed": int(dup.sum()), "kept": len(kept),
                  "texts_with_conflicting_labels": conflicting}


def stratified_split(frame: pd.DataFrame, validation_size: float, test_size: float, seed: int
                     ) -> dict[str, pd.DataFrame]:
    """Deterministic per-class split: the same input and seed always give the same rows in each split."""
    rng = np.random.default_rng(seed)
    assign = np.empty(len(frame), dtype=object)
    strata = frame[LABEL].fillna("\x00null")
    for _, idx in sorted(frame.groupby(strata, sort=True).indices.items()):
        idx = np.array(idx)
        rng.shuffle(idx)
        n = len(idx)
        n_test = int(round(n * test_size))
        n_val = int(round(n * validation_size))
        if n >= 3:  # every split sees each class that can spare a row
            n_test, n_val = max(n_test, 1), max(n_val, 1)
        assign[idx[:n_test]] = "test"
        assign[idx[n_test:n_test + n_val]] = "validation"
        assign[idx[n_test + n_val:]] = "train"
    return {s: frame[assign == s].reset_index(drop=True) for s in SPLITS}


def content_digest(splits: dict[str, pd.DataFrame]) -> str:
    """sha256 over every row actually used, split by split; changes when any row changes."""
    h = hashlib.sha256()
    for name in SPLITS:
        df = splits[name]
        cols = [c for c in (TEXT, LABEL, GROUP) if c in df.columns]
        for row in df[cols].itertuples(index=False, name=None):
            h.update(json.dumps([name, *row], ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def load_dataset_splits(cfg: DataConfig) -> DatasetSplits:
    path = Path(cfg.path).expanduser()
    raw, given_split = read_table(path, cfg.format)
    if len(raw) == 0:
        raise InputError(f"the dataset {path} has no rows; point data.path at a file with labelled examples")
    frame = _canonical(raw, cfg)
    if given_split is not None and SPLIT not in frame:
        frame[SPLIT] = given_split.values
    dedup: dict[str, Any] = {"enabled": False}
    if cfg.deduplicate:
        frame, dedup = deduplicate(frame)
    if SPLIT in frame:
        splits = _given_splits(frame, cfg)
    else:
        splits = stratified_split(frame, cfg.validation_size, cfg.test_size, cfg.seed)
    if len(splits["train"]) == 0 or len(splits["test"]) == 0:
        raise InputError(f"the dataset {path} has too few rows to split into train/validation/test "
                         f"({len(frame)} rows); add data or use data.split_column")
    labels = cfg.labels or sorted({l for l in frame[LABEL] if l is not None})
    return DatasetSplits(
        train=splits["train"], validation=splits["validation"], test=splits["test"], labels=labels,
        digest=content_digest(splits), source=str(path.resolve()),
        source_digest=file_sha256(path) if path.is_file() else content_digest(splits),
        has_group=GROUP in frame.columns, dedup=dedup,
    )


def load_labelled_file(path: str, cfg: DataConfig) -> pd.DataFrame:
    """A fixed labelled file (e.g. the golden regression set) with the same columns as the training data."""
    raw, _ = read_table(Path(path).expanduser(), "auto")
    if len(raw) == 0:
        raise InputError(f"the labelled file {path} has no rows")
    return _canonical(raw, cfg.model_copy(update={"group_column": None, "split_column": None}))


def _given_splits(frame: pd.DataFrame, cfg: DataConfig) -> dict[str, pd.DataFrame]:
    names = frame[SPLIT].map(lambda v: _SPLIT_ALIASES.get(str(v).strip().lower()))
    unknown = sorted({str(v) for v, n in zip(frame[SPLIT], names) if n is None})
    if unknown:
        raise InputError(f"split column has values {unknown[:5]} that are not train/validation/test; fix the data "
                         "or unset data.split_column to split automatically")
    frame = frame.assign(**{SPLIT: names})
    out = {s: frame[frame[SPLIT] == s].drop(columns=[SPLIT]).reset_index(drop=True) for s in SPLITS}
    if len(out["validation"]) == 0:  # carve a validation split out of train
        parts = stratified_split(out["train"], cfg.validation_size, 1e-9, cfg.seed)
        out["train"], out["validation"] = parts["train"], parts["validation"]
    return out
