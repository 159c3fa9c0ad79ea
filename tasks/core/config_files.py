"""Reading a config: YAML files, ``--set key=value`` overrides, paths relative to the file, readable errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.core.config import Config
from tasks.core.errors import InputError


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
    gates = raw.get("gates") if isinstance(raw.get("gates"), dict) else {}
    for section, key in (("regression", "golden_path"), ("regression", "general_text_path"), ("bias", "pairs_path")):
        node = gates.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and not Path(node[key]).is_absolute():
            node[key] = str((base_dir / node[key]).resolve())
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
            msg = "unknown key" + _did_you_mean(e["loc"]) + " (`adaptrail config schema` lists every key)"
        elif e["type"] == "missing":
            msg = "is required"
        lines.append(f"  - {loc}: {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _did_you_mean(loc: tuple) -> str:
    """', did you mean X?' for an unknown key, from the fields of the section it was found in."""
    import difflib

    from pydantic import BaseModel

    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f", did you mean {'.'.join(map(str, loc[:-1] + (close[0],)))}?" if close else ""


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
