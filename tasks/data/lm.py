"""Prompt/response pairs for causal-LM instruction tuning, loaded, split and fingerprinted like labelled data.

The canonical columns of ``tasks/data/splits.py`` are kept so digests, dataset logging and validation are shared:
the prompt is the ``text`` column, the response the ``label`` column (``PROMPT``/``RESPONSE``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.canonical import file_sha256
from tasks.core.config import DataConfig
from tasks.core.errors import InputError
from tasks.data.splits import (LABEL, SPLITS, TEXT, DatasetSplits, _canonical, _given_splits, content_digest,
                               deduplicate, read_table)

PROMPT, RESPONSE = TEXT, LABEL


def random_split(frame: pd.DataFrame, validation_size: float, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Deterministic shuffled split (responses are free text, so there are no classes to stratify on)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test, n_val = int(round(len(frame) * test_size)), int(round(len(frame) * validation_size))
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {s: frame.iloc[np.sort(parts[s])].reset_index(drop=True) for s in SPLITS}


def load_lm_splits(cfg: DataConfig) -> DatasetSplits:
    """Prompt/response pairs from any reader of ``tasks/data.py``, split and fingerprinted like labelled data."""
    path = Path(cfg.path).expanduser()
    raw, given_split = read_table(path, cfg.format)
    if len(raw) == 0:
        raise InputError(f"the dataset {path} has no rows; point data.path at a file with prompt/response pairs")
    if cfg.prompt_column not in raw.columns or cfg.response_column not in raw.columns:
        raise InputError(f"model.task causal_lm needs columns {cfg.prompt_column!r} and {cfg.response_column!r} "
                         f"(the data has {list(raw.columns)}); set data.prompt_column / data.response_column")
    frame = _canonical(raw, cfg.model_copy(update={"text_column": cfg.prompt_column,
                                                   "label_column": cfg.response_column}))
    if given_split is not None:
        frame["split"] = given_split.values
    dedup: dict[str, Any] = {"enabled": False}
    if cfg.deduplicate:
        frame, dedup = deduplicate(frame)
    if "split" in frame:
        splits = _given_splits(frame, cfg)
    else:
        splits = random_split(frame, cfg.validation_size, cfg.test_size, cfg.seed)
    if len(splits["train"]) == 0 or len(splits["test"]) == 0:
        raise InputError(f"the dataset {path} has too few rows to split into train/validation/test ({len(frame)} "
                         "rows); add pairs or use data.split_column")
    return DatasetSplits(train=splits["train"], validation=splits["validation"], test=splits["test"], labels=[],
                         digest=content_digest(splits), source=str(path.resolve()),
                         source_digest=file_sha256(path) if path.is_file() else content_digest(splits),
                         has_group="group" in frame.columns, dedup=dedup)
