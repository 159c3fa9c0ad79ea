"""Canonical JSON and sha256: the bytes every stored digest is computed over (ledger rows, evidence, adapter
manifests, audit reports). Changing them would break every stored hash, so there is exactly one definition."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, ASCII (non-ASCII as ``\\u`` escapes), no NaN: the same value always gives the same
    text, and so the same digest."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"value is not plain JSON ({e}); pass only str/int/float/bool/None, lists and dicts") from e


def json_sha256(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("ascii")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
