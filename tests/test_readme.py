"""The README's quick start, run as written: after a (tiny) training run, every command of the block from `show` to
`audit` is executed verbatim by bash in a fresh directory, and each does what the README says."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PASS_GATES = ["gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point",
              "gates.regression.min_margin_over_baseline=-1.0", "gates.regression.max_overfit_gap=1.0",
              "gates.bias.min_disparate_impact_ratio=0", "gates.bias.max_equalized_odds_difference=1",
              "gates.bias.max_accuracy_gap=1", "gates.bias.max_counterfactual_flip_rate=1",
              "gates.bias.max_counterfactual_prob_change=1"]


def quick_start() -> list[str]:
    """The commands of the README's first code block (comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_quick_start_block_starts_with_make_run_and_ends_with_make_test():
    commands = quick_start()
    assert commands[0] == "make run" and commands[-1] == "make test"
    assert [c.split()[1] for c in commands[1:-1]] == ["show", "keygen", "policy", "approve", "verify", "predict",
                                                      "audit"]


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_quick_start_runs_verbatim(prefect_harness, tmp_path, monkeypatch, cli, tickets_csv, tiny_bert, capsys):
    """`make run` is replaced by what it does (init, then a run) on the tiny model; the rest runs as written."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    monkeypatch.chdir(tmp_path)  # ADAPTRAIL_HOME unset: the state is ./.adaptrail, as for a user in a clone
    for name in ("ADAPTRAIL_HOME", "MLFLOW_TRACKING_URI", "ADAPTRAIL_ARTIFACT_ROOT", "ADAPTRAIL_SIGNING_KEY",
                 "ADAPTRAIL_SERVICE_KEY", "ADAPTRAIL_POLICY", "ADAPTRAIL_USER"):
        monkeypatch.delenv(name, raising=False)
    assert cli(["init"]) == 0
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", *PASS_GATES]
    assert cli(["run", "--config", str(ROOT / "configs" / "tiny.yaml")] + [a for s in sets for a in ("--set", s)]) == 0
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k not in ("ADAPTRAIL_HOME", "MLFLOW_TRACKING_URI")}
    outputs = {}
    for command in quick_start()[1:-1]:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        outputs[command.split()[1]] = done.stdout
    assert "gates" in outputs["show"] and "ledger" in outputs["show"].lower()
    assert "champion" in outputs["approve"]
    assert "ok" in outputs["verify"]
    assert re.search(r"\d\.\d{3}", outputs["predict"])  # a label and its probability
    assert "PASS" in outputs["audit"]
