"""What byte-identical training depends on besides the config, the data and the base: the software and the machine.

Recorded at registration as the run artifact ``reports/environment.json`` (and a few run params), so that
``adaptrail reproduce`` can say why a re-run did not come out byte for byte the same: another CPU or GPU, another
thread count (floating-point sums are split differently across threads), other library versions, or
non-deterministic kernels (on GPU). Pure reads of the running process; nothing is changed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

ENVIRONMENT_FILE = "environment.json"
#: Libraries whose versions change the numbers a training run computes (or the bytes it writes).
PACKAGES = ("torch", "transformers", "peft", "adapters", "numpy", "safetensors", "tokenizers", "accelerate")
#: Environment variables that change how many threads compute or which kernels run.
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED")


def training_environment(seed: int | None = None) -> dict[str, Any]:
    """This process's environment as far as training results depend on it (JSON-able, flat values or dicts)."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpus,
        "cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "seed": seed,
        "packages": {name: _version(name) for name in PACKAGES},
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def flat(env: dict[str, Any]) -> dict[str, str]:
    """``{"packages": {"torch": "2.1"}}`` -> ``{"packages.torch": "2.1"}``; lists joined; every value as text."""
    out: dict[str, str] = {}
    for key, value in env.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        elif isinstance(value, list):
            out[key] = ", ".join(str(v) for v in value) or "none"
        else:
            out[key] = "unset" if value is None else str(value)
    return out


def differences(recorded: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What differs between the recorded environment and ``now``, one line each (``key: recorded -> now``)."""
    if not recorded:
        return ["the environment was not recorded at registration (a version registered before environment.json)"]
    was, is_ = flat(recorded), flat(now)
    return [f"{k}: {was.get(k, 'not recorded')} -> {is_.get(k, 'absent')}" for k in sorted(set(was) | set(is_))
            if was.get(k, "not recorded") != is_.get(k, "absent")]
