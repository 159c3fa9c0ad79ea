"""The adapter artifact: only what was trained (safetensors + how to rebuild it), metadata and a manifest of sha256s.

``adapter.digest`` = sha256 of the canonical JSON of the manifest's ``{file: sha256}`` map, so any changed,
added or removed file changes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core.peft_config import PeftConfig
from tasks.core.canonical import file_sha256, json_sha256
from tasks.core.errors import InputError
from tasks.training.methods import save_weights
from tasks.core.names import ADAPTER_MANIFEST, ADAPTER_METADATA


def file_map(adapter_dir: Path) -> dict[str, str]:
    """Every file of the adapter except the manifest itself -> its sha256."""
    return {
        p.relative_to(adapter_dir).as_posix(): file_sha256(p)
        for p in sorted(adapter_dir.rglob("*"))
        if p.is_file() and p.name != ADAPTER_MANIFEST
    }


def digest_of(files: dict[str, str]) -> str:
    """sha256 of the canonical JSON of ``{file: sha256}``. File names must be ASCII (every file adaptrail writes
    is): the manifests stored before the one canonical JSON were hashed as UTF-8 without escapes, which gives the
    same bytes only for ASCII text."""
    odd = [name for name in files if not name.isascii()]
    if odd:
        raise InputError(f"adapter file names must be ASCII; rename {odd[:3]}")
    return json_sha256(files)


def write_manifest(adapter_dir: Path) -> str:
    """Write manifest.json and return the adapter digest."""
    files = file_map(adapter_dir)
    bad = [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    if bad:
        raise InputError(f"adapter files {bad} are pickles; adapters are stored as safetensors only")
    digest = digest_of(files)
    (adapter_dir / ADAPTER_MANIFEST).write_text(
        json.dumps({"files": files, "digest": digest}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return digest


def recompute_digest(adapter_dir: Path) -> str:
    """Digest of what is on disk now (not what the manifest claims)."""
    return digest_of(file_map(adapter_dir))


def save_adapter(model, adapter_dir: Path, metadata: dict[str, Any], peft_cfg: PeftConfig | None = None) -> str:
    """Save only what was trained (``tasks.methods.save_weights``), the metadata and the manifest; returns the digest.

    The method comes from ``peft_cfg``, else from ``metadata["peft"]``; it is recorded in the metadata.
    """
    cfg = _method_config(model, metadata, peft_cfg)
    if cfg is not None and "peft" not in metadata:
        metadata = {**metadata, "peft": cfg.model_dump(mode="json")}
    save_weights(model, cfg or PeftConfig(), adapter_dir)  # cfg None: a peft model, saved by peft whatever its method
    (adapter_dir / ADAPTER_METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n",
                                                encoding="utf-8")
    return write_manifest(adapter_dir)


def _method_config(model, metadata: dict[str, Any], peft_cfg: PeftConfig | None) -> PeftConfig | None:
    """The method's config; None for a peft model given without one (peft's own files say which method it is)."""
    if peft_cfg is not None:
        return peft_cfg
    if metadata.get("peft"):
        return PeftConfig.model_validate(metadata["peft"])
    if hasattr(model, "peft_config"):
        return None
    raise InputError("save_adapter cannot tell which method trained this model; pass peft_cfg= or metadata['peft']")


def read_metadata(adapter_dir: Path) -> dict[str, Any]:
    return json.loads((adapter_dir / ADAPTER_METADATA).read_text(encoding="utf-8"))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
