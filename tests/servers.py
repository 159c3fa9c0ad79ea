"""Real servers for the deployment and browser tests: a ``prefect server`` and an ``mlflow server`` (SQLite,
artifacts in a temp dir) on free loopback ports, shared by the test session, and ``adaptrail serve`` pointed at them.
The fixtures are registered in ``conftest.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.serve import mlflow_server, prefect_server, start, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[1]

#: Overrides that make a tiny-config run quick and let its gates pass on a random-init model.
FAST = ["training.epochs=2", "training.batch_size=16", "training.learning_rate=0.01", "peft.r=4",
        "gates.bias.bootstrap_samples=50", "gates.bias.min_group_size=10", "gates.regression.min_group_size=10",
        "gates.regression.min_margin_over_baseline=-1.0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """A real ``prefect server`` and ``mlflow server`` for the session: {"home", "prefect", "mlflow"}."""
    home = tmp_path_factory.mktemp("servers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTRAIL_HOME", str(home))
        mp.setenv("PREFECT_HOME", str(home / "prefect-server"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("ADAPTRAIL_ARTIFACT_ROOT", raising=False)
        specs = [prefect_server(free_port()), mlflow_server(free_port())]
    procs = []
    try:
        for spec in specs:
            procs.append(start(spec, home / "logs"))
        for spec, proc in zip(specs, procs):
            try:
                wait_until_up(spec, proc, timeout=150)
            except Exception as err:
                pytest.fail(f"{err}\n{tail(home / 'logs' / f'{spec.name.lower()}.log')}")
        yield {"home": home, "prefect": specs[0].url, "mlflow": specs[1].url}
    finally:
        for proc in procs:
            stop(proc)


def server_env(servers: dict) -> dict[str, str]:
    """The environment of a process that works against the servers (as a user's shell would be set up)."""
    env = {**os.environ, "PREFECT_API_URL": servers["prefect"] + "/api", "MLFLOW_TRACKING_URI": servers["mlflow"],
           "ADAPTRAIL_HOME": str(servers["home"]), "PREFECT_HOME": str(servers["home"] / "prefect-client")}
    env.pop("ADAPTRAIL_ARTIFACT_ROOT", None)
    return env


@pytest.fixture
def served(servers):
    """``python -m flows.serve`` pointed at the servers, as a user would run ``adaptrail serve``."""
    log_path = servers["home"] / "logs" / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=server_env(servers), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield log_path
    finally:
        stop(proc)


def wait_for_deployment(name: str, log_path: Path, timeout: float = 120.0) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(name)
                return
            except Exception:
                time.sleep(1)
    pytest.fail(f"deployment {name} not registered within {timeout:.0f} s; serve log:\n{tail(log_path)}")
