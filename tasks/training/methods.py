"""Every training method in one place: attach it to a base model, save what was trained, rebuild and load it.

peft methods keep peft's own files (``adapter_config.json`` + ``adapter_model.safetensors``) so anyone can load
them with ``PeftModel.from_pretrained``. ``bottleneck`` (AdapterHub ``adapters``) and ``full`` write
``adapter_model.safetensors`` holding exactly the trained tensors, plus ``adapter_structure.json`` saying how to
rebuild the model they belong to. No pickles anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from tasks.core.peft_config import METHOD_OPTIONS, PeftConfig, PeftMethod
from tasks.core.errors import InputError

METHODS: tuple[str, ...] = get_args(PeftMethod)
PEFT_METHODS: tuple[str, ...] = ("lora", "ia3", "prompt_tuning", "prefix_tuning", "loha", "lokr", "vera")
TASKS = ("sequence_classification", "causal_lm")

WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
STRUCTURE_FILE = "adapter_structure.json"
BOTTLENECK_NAME = "adaptrail"
ALL_LINEAR = "all-linear"
_PEFT_CARD = "README.md"  # peft writes a boilerplate model card; the registry holds the real evidence


def method_label(cfg: PeftConfig) -> str:
    """The ``adaptrail.peft.method`` tag: the method and its variant, e.g. ``lora+dora``, ``bottleneck:pfeiffer``."""
    if cfg.method == "lora":
        return "+".join(["lora"] + [name for name, on in (("dora", cfg.use_dora), ("rslora", cfg.use_rslora)) if on])
    if cfg.method == "bottleneck":
        return f"bottleneck:{cfg.bottleneck}"
    return cfg.method


def head_modules(fresh_keys: list[str]) -> list[str]:
    """Freshly initialised modules must be trained and saved with the adapter, or a reload would differ."""
    return sorted({k.rsplit(".", 1)[0].split(".")[0] for k in fresh_keys})


def linear_module_names(model) -> list[str]:
    import torch

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def to_peft_config(cfg: PeftConfig, task: str, modules_to_save: list[str]):
    """The one place a peft method's config section becomes a peft config object: the options the method reads
    (``METHOD_OPTIONS``) under the keyword peft gives each, the task type, and the modules trained in full."""
    import peft

    if task not in TASKS:
        raise InputError(f"task {task!r} is not supported; use one of {', '.join(TASKS)}")
    if cfg.method not in PEFT_METHODS:
        raise InputError(f"peft.method {cfg.method!r} is not a peft method; peft methods are "
                         f"{', '.join(PEFT_METHODS)}")
    kind = {"lora": peft.LoraConfig, "ia3": peft.IA3Config, "loha": peft.LoHaConfig, "lokr": peft.LoKrConfig,
            "vera": peft.VeraConfig, "prompt_tuning": peft.PromptTuningConfig,
            "prefix_tuning": peft.PrefixTuningConfig}[cfg.method]
    task_type = {"sequence_classification": peft.TaskType.SEQ_CLS, "causal_lm": peft.TaskType.CAUSAL_LM}[task]
    options = {keyword: _plain(getattr(cfg, option)) for option, keyword in METHOD_OPTIONS[cfg.method].items()}
    if "prompt_tuning_init" in options:  # peft's enum values are upper case
        options["prompt_tuning_init"] = peft.PromptTuningInit[options["prompt_tuning_init"].upper()]
    if options.get("target_modules") == [ALL_LINEAR]:  # peft's shorthand: every linear layer but the output head
        options["target_modules"] = ALL_LINEAR
    return kind(task_type=task_type, modules_to_save=modules_to_save or None, **options)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def to_adapters_config(cfg: PeftConfig):
    """The one place the bottleneck section becomes an AdapterHub config (Pfeiffer = SeqBn, Houlsby = DoubleSeqBn)."""
    from adapters import DoubleSeqBnConfig, SeqBnConfig

    kind = {"pfeiffer": SeqBnConfig, "houlsby": DoubleSeqBnConfig}[cfg.bottleneck]
    options = METHOD_OPTIONS["bottleneck"]
    return kind(**{options[o]: getattr(cfg, o) for o in options if o != "bottleneck"})
# --- attach -----------------------------------------------------------------------------------------------


def attach(model, peft_cfg: PeftConfig, task: str, fresh_keys: list[str]):
    """Freeze the base and attach the method; ``fresh_keys`` (the new head) stay trainable and are saved."""
    if peft_cfg.method in PEFT_METHODS:
        return _attach_peft(model, peft_cfg, task, fresh_keys)
    if peft_cfg.method == "bottleneck":
        return _attach_bottleneck(model, peft_cfg, fresh_keys)
    if peft_cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    raise InputError(f"peft.method {peft_cfg.method!r} is not supported; choose one of {', '.join(METHODS)}")


def _attach_peft(model, cfg: PeftConfig, task: str, fresh_keys: list[str]):
    from peft import get_peft_model

    try:
        return get_peft_model(model, to_peft_config(cfg, task, head_modules(fresh_keys)))
    except ValueError as err:
        raise InputError(f"cannot attach {method_label(cfg)} to the base model: {err}. peft.target_modules "
                         f"{cfg.target_modules} must name linear layers of the base; its linear layers are "
                         f"{linear_module_names(model)}") from None


def _attach_bottleneck(model, cfg: PeftConfig, fresh_keys: list[str]):
    import adapters

    try:
        adapters.init(model)
    except ValueError as err:
        raise InputError(f"method bottleneck cannot attach to a {model.config.model_type} model: {err}; "
                         "choose a peft method (e.g. peft.method: lora)") from None
    model.add_adapter(BOTTLENECK_NAME, config=to_adapters_config(cfg))
    model.train_adapter(BOTTLENECK_NAME)  # freezes everything but the adapter and activates it
    _unfreeze(model, fresh_keys)
    return model


def _unfreeze(model, keys: list[str]) -> None:
    """Make parameters trainable by name or by module prefix (``classifier`` covers ``classifier.weight``)."""
    for name, p in model.named_parameters():
        if any(name == k or name.startswith(k + ".") for k in keys):
            p.requires_grad_(True)


def trained_tensors(model) -> dict[str, Any]:
    """Every trainable parameter (each shared tensor once), detached, contiguous, on the CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


# --- save and load ----------------------------------------------------------------------------------------


def save_weights(model, peft_cfg: PeftConfig, adapter_dir: Path) -> None:
    """Write what was trained (safetensors) and how to rebuild its structure into ``adapter_dir``."""
    from safetensors.torch import save_file

    adapter_dir.mkdir(parents=True, exist_ok=True)
    if peft_cfg.method in PEFT_METHODS:
        if not hasattr(model, "peft_config"):
            raise InputError(f"method {peft_cfg.method} was given, but the model has no peft adapter attached; "
                             "attach it with tasks.methods.attach first")
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
        (adapter_dir / _PEFT_CARD).unlink(missing_ok=True)
        _sort_peft_sets(model, adapter_dir)
        return
    tensors = trained_tensors(model)
    save_file(tensors, str(adapter_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    structure = {"method": peft_cfg.method, "label": method_label(peft_cfg), "peft": peft_cfg.model_dump(mode="json"),
                 "adapter_name": BOTTLENECK_NAME if peft_cfg.method == "bottleneck" else None,
                 "tensors": sorted(tensors)}
    (adapter_dir / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sort_peft_sets(model, adapter_dir: Path) -> None:
    """peft writes set-valued settings (e.g. the target modules ``all-linear`` resolves to) in set order, which
    changes with each process's string-hash seed; sorted, the same adapter is the same bytes in any process."""
    path = adapter_dir / PEFT_CONFIG_FILE
    cfg = next(iter(getattr(model, "peft_config", {}).values()), None)
    sets = [k for k, v in vars(cfg).items() if isinstance(v, set)] if cfg is not None else []
    if not sets or not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in sets:
        if isinstance(data.get(key), list):
            data[key] = sorted(data[key], key=str)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")  # peft's own layout


def saved_method(adapter_dir: Path) -> str:
    """Which method the files in ``adapter_dir`` were saved by (``peft`` for any peft method)."""
    if (adapter_dir / STRUCTURE_FILE).is_file():
        return str(json.loads((adapter_dir / STRUCTURE_FILE).read_text(encoding="utf-8"))["method"])
    if (adapter_dir / PEFT_CONFIG_FILE).is_file():
        return "peft"
    raise InputError(f"{adapter_dir} holds neither {PEFT_CONFIG_FILE} nor {STRUCTURE_FILE}; it is not an adapter "
                     "saved by adaptrail")


def load_weights(base_model, adapter_dir: Path, metadata: dict[str, Any]):
    """Rebuild the saved structure on a fresh ``base_model`` and load the tensors; refuse when keys differ."""
    saved = saved_method(adapter_dir)
    claimed = (metadata.get("peft") or {}).get("method")
    if claimed and not (claimed in PEFT_METHODS if saved == "peft" else claimed == saved):
        raise InputError(f"{adapter_dir}: metadata says method {claimed!r}, the weights were saved by {saved!r}")
    model = _load_peft(base_model, adapter_dir) if saved == "peft" else \
        _load_tensors(base_model, adapter_dir, metadata.get("task", "sequence_classification"))
    model.eval()
    return model


def _load_peft(base_model, adapter_dir: Path):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=False)
    with safe_open(str(adapter_dir / WEIGHTS_FILE), framework="pt") as f:
        stored = set(f.keys())
    _check_keys(set(get_peft_model_state_dict(model)), stored, adapter_dir)
    return model


def _load_tensors(base_model, adapter_dir: Path, task: str):
    import torch
    from safetensors.torch import load_file

    structure = json.loads((adapter_dir / STRUCTURE_FILE).read_text(encoding="utf-8"))
    cfg = PeftConfig.model_validate(structure["peft"])
    tensors = load_file(str(adapter_dir / WEIGHTS_FILE))
    base_names = {n for n, _ in base_model.named_parameters()}
    model = attach(base_model, cfg, task, sorted(set(tensors) & base_names))
    _check_keys({n for n, p in model.named_parameters() if p.requires_grad}, set(tensors), adapter_dir)
    with torch.no_grad():
        for name, value in tensors.items():
            param = model.get_parameter(name)
            if param.shape != value.shape:
                raise InputError(f"{adapter_dir}: tensor {name} has shape {tuple(value.shape)}, the rebuilt model "
                                 f"expects {tuple(param.shape)}; the adapter was trained on another base")
            param.copy_(value)
    return model


def _check_keys(expected: set[str], stored: set[str], adapter_dir: Path) -> None:
    if expected != stored:
        missing, unexpected = sorted(expected - stored), sorted(stored - expected)
        raise InputError(f"{adapter_dir / WEIGHTS_FILE} does not fit the rebuilt model: missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}; the adapter was saved for another structure")
