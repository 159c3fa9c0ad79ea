"""bench/gpu_train.py, the GPU benchmark, smoke-tested on the CPU with its tiny config; and the promise that lets it
run on the GPU machine: adaptrail's training code imports without MLflow, Prefect or Great Expectations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_train.py"
FORBIDDEN = ("mlflow", "prefect", "great_expectations")
PER_TRAINER = ("tokens_per_s", "step_ms", "peak_mib", "mfu", "mfu_4n", "loss", "seconds", "trainable")


def _run(args: list[str], timeout: int, code: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"})


def test_tiny_run_prints_both_trainers_and_the_json_line():
    out = _run(["--tiny", "--steps", "3"], timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    lines = out.stdout.strip().splitlines()
    for name in ("adaptrail", "trainer"):
        line = next(l for l in lines if l.startswith(f"{name} "))
        assert "tokens/s" in line and "peak RSS" in line and "step time" in line and "MFU unknown" in line
    assert any(l.startswith("ratio adaptrail / Trainer tokens/s: ") for l in lines)
    assert any(l.startswith("ratio adaptrail / Trainer peak RSS: ") for l in lines)
    result = json.loads(lines[-1])  # the last line: every number, for the README
    expected = {"device", "dtype", "peak_flops", "params", "params_matmul", "memory_kind", "batch_size", "seq_len",
                "steps", "warmup", "ratio_tokens_per_s", "ratio_peak_memory", "forbidden_modules_loaded"}
    expected |= {f"{name}_{k}" for name in ("adaptrail", "trainer") for k in PER_TRAINER}
    assert expected <= result.keys()
    assert result["device"] == "cpu" and result["dtype"] == "float32" and result["memory_kind"] == "peak_rss"
    assert result["steps"] == 3 and result["tiny"] is True
    assert result["adaptrail_tokens_per_s"] > 0 and result["trainer_tokens_per_s"] > 0
    assert result["adaptrail_mfu"] is None  # no CPU in the peak table
    assert result["adaptrail_trainable"] == result["trainer_trainable"] > 0  # the same LoRA on both sides
    assert result["forbidden_modules_loaded"] == []  # the whole run, Trainer included, loaded none of them


def test_adaptrail_training_code_imports_without_mlflow_prefect_or_gx():
    # As on the GPU machine: the three packages are absent (None in sys.modules: import fails, find_spec says no).
    # The script imports adaptrail's training code first, then refuses a full-size run without a GPU (exit 2); an
    # import of any of the three on that path would fail first (exit 3).
    code = ("import runpy, sys\n"
            f"for m in {FORBIDDEN!r}: sys.modules[m] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]\n"
            f"try:\n    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    loaded = sorted(m for m in sys.modules if m.startswith('tasks.'))\n"
            "    print('LOADED', ' '.join(loaded))\n"
            "    raise\n")
    out = _run(["--device", "cpu"], timeout=60, code=code)
    assert out.returncode == 2, out.stdout + out.stderr[-4000:]
    assert "needs a CUDA GPU" in out.stderr
    loaded = next(l for l in out.stdout.splitlines() if l.startswith("LOADED ")).split()[1:]
    assert {"tasks.training.loop", "tasks.training.causal_lm", "tasks.training.methods"} <= set(loaded)
    assert {m.split(".")[1] for m in loaded} <= {"core", "training"}, loaded  # nothing above the training layer
