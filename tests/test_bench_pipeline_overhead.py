"""bench/pipeline_overhead.py (issue 17) smoke-tested on a tiny model: the whole `adaptrail init` + `adaptrail run`
in a subprocess, then the step table read back from the run's Prefect task runs. No timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "pipeline_overhead.py"
STEPS = ("load-data", "open-run", "validate-data", "train-adapter", "evaluate", "evaluate-champion", "bias-gate",
         "regression-gate", "register", "publish-summary")


def test_a_tiny_run_prints_every_step_and_the_share_outside_training(tickets_csv, tiny_bert):
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "training.max_steps=2", "training.epochs=1",
            "gates.bias.bootstrap_samples=50", "gates.bias.min_group_size=10", "gates.regression.min_group_size=10"]
    out = subprocess.run([sys.executable, str(SCRIPT), "--config", "configs/tiny.yaml",
                          *[a for s in sets for a in ("--set", s)]],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for step in STEPS:
        assert any(line.startswith(f"{step}: ") or line.startswith(f"{step} ") for line in lines), step
    assert any(line.startswith("start-up: ") for line in lines)
    assert any(line.startswith("shutdown: ") for line in lines)
    assert any(line.startswith("total (adaptrail run wall time") for line in lines)
    assert any(line.startswith("training seconds (the train-adapter step): ") for line in lines)
    assert any(line.startswith("seconds NOT training (outside training): ") for line in lines)
    target = next(line for line in lines if line.startswith("target <= 20 s outside training: "))
    assert target.endswith(": met") or ": MISSED (" in target
    evaluation = next(line for line in lines if line.startswith("evaluation inference throughput: "))
    assert "texts/s" in evaluation, evaluation
    assert any(line.startswith("bias gate (counterfactual swaps) inference throughput: ") for line in lines)
