"""bench/train_speed.py's small-config smoke run: every mode it ships runs in its own process and the summary prints
each target's ratio and verdict. No timing is asserted (speed targets live in the benchmark, not in tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_data

ROOT = Path(__file__).resolve().parents[1]
MODES = ("adaptrail-lora,trainer-lora,plain-lora,adaptrail-lora+nofuse,adaptrail-lora+release,adaptrail-full,"
         "adaptrail-lora@bert-base,adaptrail-full@bert-base,adaptrail-lora+gc@bert-base,adaptrail-full+gc@bert-base")

pytestmark = pytest.mark.realdata


def test_small_run_prints_every_mode_and_every_target_with_its_verdict():
    shared_data("sms_spam/normalized.csv")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_speed.py"), "--rows", "100", "--memory-rows", "8",
         "--batch-size", "16", "--modes", MODES],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    text = out.stdout
    for mode in MODES.split(","):
        line = next(l for l in text.splitlines() if l.startswith(mode + " "))
        assert re.search(r"real tokens/s; test macro-F1 (\d\.\d{4}|n/a \(random init\)); peak RSS [\d,]+ MiB", line)
        assert ("n/a" in line) == mode.endswith("@bert-base")  # quality is judged on the real base only
    verdict = r"(met|NOT met)\)"
    assert re.search(r"speed: adaptrail default / Trainer = \d+\.\d\dx real tokens/s \(target >= 1\.3x: " + verdict,
                     text)
    assert re.search(r"quality: test macro-F1 .* difference [+-]\d\.\d{4} \(target no loss beyond 0\.01: "
                     r"(met|NOT met); within 0\.01 either way: (yes|no)\)", text)
    assert re.search(r"memory: adaptrail default / Trainer peak RSS = \d+\.\d\dx \(target <= 1\.0x: " + verdict, text)
    for what in ("training.fuse_lora on / off", "training.release_memory off \\(default\\) / on",
                 "adaptrail default / plain loop"):
        assert re.search(what + r": \d+\.\d\dx real tokens/s, \d+\.\d\dx peak RSS", text)
    assert re.search(r"memory MiniLM: LoRA / full fine-tuning peak RSS = \d+\.\d\dx\n", text)  # printed, not judged
    for how in ("", ", both with gradient checkpointing"):
        assert re.search(r"memory bert-base: LoRA / full fine-tuning peak RSS = \d+\.\d\dx" + how
                         + r" \(target <= 0\.6x: " + verdict, text)
    assert "settings: sms_spam, 100 rows" in text


def test_missing_data_is_a_clear_error_before_any_training(tmp_path):
    # the script resolves ../shared/data beside the project: a copy of the script in a tree without it must refuse
    bench = tmp_path / "project" / "bench"
    bench.mkdir(parents=True)
    (bench / "train_speed.py").write_text((ROOT / "bench" / "train_speed.py").read_text(encoding="utf-8"))
    out = subprocess.run([sys.executable, str(bench / "train_speed.py"), "--modes", "adaptrail-lora"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "benchmark data not found" in out.stderr and "shared/data" in out.stderr
