"""bench/audit_1000.py smoke-tested at a tiny size: the local backend, and the servers backend (a throw-away
PostgreSQL ledger and a real ``mlflow server``) when PostgreSQL is installed. No timing is asserted: only that the
run completes and prints its breakdown and targets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import ENV_REQUIRE, pg_bin_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "audit_1000.py"
LINES = ("seeded 20 versions of 2 models", "audit: 20 versions", "(a) registry and ledger checks: ",
         "(b) byte re-hash of every adapter: ", "(c) reports: ", "total: ", "target (a) < 60 s: ",
         "verify bench-model-1@champion: ", "target verify warm < 2 s: ")


def _run(backend: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ADAPTRAIL_LEDGER_URL")}
    return subprocess.run([sys.executable, str(SCRIPT), "--versions", "20", "--models", "2", "--backend", backend],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _check(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for expected in LINES:
        assert expected in out.stdout, f"{expected!r} missing from:\n{out.stdout}"
    assert "findings {'critical': 1," in out.stdout  # the one flipped bit, and nothing else critical
    assert "chain ok" in out.stdout


def test_tiny_local_run_prints_the_timing_breakdown():
    _check(_run("local", timeout=300))


@pytest.mark.integration
def test_tiny_run_on_postgres_and_an_mlflow_server_prints_the_timing_breakdown():
    if pg_bin_dir() is None:
        message = "PostgreSQL is not installed; install it with `apt-get install -y postgresql-15`"
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but {message}")
        pytest.skip(message)
    out = _run("servers", timeout=600)
    _check(out)
    assert "mlflow server http://127.0.0.1:" in out.stdout and "ledger postgresql://" in out.stdout
