"""One canonical JSON for every stored digest, producing exactly the bytes stored before it was unified: digests
of ledger rows, evidence and adapter manifests computed by the earlier code (values pinned here) still match."""

from __future__ import annotations

import pytest

from tasks.core.canonical import canonical_json
from tasks.core.errors import InputError
from tasks.governance.ledger import evidence_digest, row_hash
from tasks.training.adapter_files import digest_of

# Computed with the code before the unification (tasks/adapter.py and tasks/ledger.py at 771f6fe).
ADAPTER_FILES = {"adapter_config.json": "a" * 64, "adapter_model.safetensors": "b" * 64, "adaptrail.json": "c" * 64}
ADAPTER_DIGEST = "fb349c0482053d3a70d67df4347902d98daff116643818cfa01d8ca73e2fdb07"
ROW = {"seq": 1, "at": "2026-01-02T03:04:05.000000Z", "model": "m", "version": "1", "action": "approved",
       "actor": "alice", "reason": "looks good — ✓ für", "evidence_digest": "e" * 64, "prev_hash": "0" * 64,
       "extra": {"tags": {"adaptrail.approval.status": "approved"}, "note": "naïve"}}
ROW_HASH = "023f8d8db3431eb52a5c12c0b83b82844dd94f8bcdb283e2d6cbf8bcbefa7705"
EVIDENCE_DIGEST = "6d9eb45284090145dc16661b06abe01185a16a7dabba07c992a131bffa6b8114"


def test_stored_digests_are_unchanged():
    assert digest_of(ADAPTER_FILES) == ADAPTER_DIGEST
    assert row_hash(ROW) == ROW_HASH
    assert evidence_digest({"b": 1, "a": "é"}) == EVIDENCE_DIGEST


def test_canonical_json_is_sorted_compact_ascii_and_refuses_nan():
    assert canonical_json({"b": [1, 2], "a": "é"}) == '{"a":"\\u00e9","b":[1,2]}'
    with pytest.raises(InputError, match="not plain JSON"):
        canonical_json({"x": float("nan")})


def test_non_ascii_adapter_file_names_are_refused():
    """Earlier manifests were hashed without escapes; only ASCII names give the same bytes either way."""
    with pytest.raises(InputError, match="must be ASCII"):
        digest_of({"gewichte-ä.safetensors": "a" * 64})
