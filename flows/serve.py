"""Every flow as a Prefect deployment: served by one local process (``adaptrail serve``) or, via prefect.yaml,
by a work pool. A UI user picks a deployment, fills the typed form and runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.approval_reminders import DAILY_CRON, approval_reminders
from flows.compare_methods import compare_methods_flow
from flows.compliance_audit import SEMIANNUAL_CRON, compliance_audit
from flows.monitor_adapter import DEFAULT_REF, ENV_MONITOR_DATA, WEEKLY_CRON, monitor_adapter
from flows.review_adapter import review_adapter
from flows.train_adapter import train_adapter_flow
from tasks.core import state
from tasks.core.config_files import load_config
from tasks.core.errors import AdaptrailError
from tasks.governance import automations

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
DEPLOYMENT_NAME = "local"
TAGS = ["adaptrail"]


def default_train_parameters(config_path: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """The form's prefilled values: the default config as plain JSON (paths already absolute)."""
    return {"config": load_config(config_path).model_dump(mode="json")}


def deployments(name: str = DEPLOYMENT_NAME) -> list:
    """The flows as ``RunnerDeployment``s; the audit also runs on its semiannual cron, the reminders daily (UTC)."""
    from prefect.schedules import Cron

    return [
        train_adapter_flow.to_deployment(
            name, parameters=default_train_parameters(), tags=[*TAGS, "training"],
            description="Train a PEFT adapter on validated data, run the bias and regression gates and register "
                        "the version with its evidence (edit the config form to change data, model or gates)."),
        compare_methods_flow.to_deployment(
            name, parameters=default_train_parameters(), tags=[*TAGS, "training", "comparison"],
            description="Proof of concept: train several PEFT methods (config compare.methods) on the same split "
                        "and budget, compare quality, trainable parameters, size, time, memory and cost, and send "
                        "the recommended one through the gates into the registry."),
        review_adapter.to_deployment(
            name, tags=[*TAGS, "approval"],
            description="Show a registered version's evidence and wait for an approve/reject decision; "
                        "the decision goes to the approval ledger and the MLflow tags."),
        compliance_audit.to_deployment(
            name, schedules=[Cron(SEMIANNUAL_CRON, timezone="UTC")], tags=[*TAGS, "audit"],
            description="Compliance audit of every registered adapter version (findings, verdict, HTML/JSON/CSV "
                        "report). Runs at 06:00 UTC on 1 January and 1 July; trigger it any time with Run."),
        approval_reminders.to_deployment(
            name, schedules=[Cron(DAILY_CRON, timezone="UTC")], tags=[*TAGS, "approval"],
            description="Expire approvals past their review date and send the Prefect event "
                        "adaptrail.approval.expiring for each approval due within 14 days (the automation "
                        "'approval expiring within 14 days' notifies people). Runs daily at 07:00 UTC."),
        monitor_adapter.to_deployment(
            name, schedules=[Cron(WEEKLY_CRON, timezone="UTC")], tags=[*TAGS, "monitoring"],
            parameters={"model": DEFAULT_REF, "data": os.environ.get(ENV_MONITOR_DATA, "")},
            description="Monitor the champion on new texts (a file or glob where production texts land; "
                        f"${ENV_MONITOR_DATA} when served): drift, and with labels accuracy and group checks, "
                        "against the evidence it was approved on. A breach sets review_required in the ledger. "
                        "Runs at 05:00 UTC every Monday."),
    ]


def serve_all(limit: int | None = None) -> None:
    """Register the deployments with the Prefect API and execute their runs until interrupted."""
    from prefect import serve

    print(automations.apply_from_environment(), flush=True)
    serve(*deployments(), limit=limit)


# --- local servers: `adaptrail ui` and the real-server test ------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A server to start as a child process: its command, the URL that answers when it is up, its environment."""

    name: str
    command: list[str]
    health_url: str
    url: str
    env: dict[str, str]


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else whatever is on PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def prefect_server(port: int = 4200, host: str = "127.0.0.1") -> Server:
    """``prefect server start`` with the project's PREFECT_HOME (its SQLite database lives there)."""
    env = {**os.environ, "PREFECT_HOME": os.environ["PREFECT_HOME"], "PREFECT_SERVER_API_HOST": host,
           "PREFECT_SERVER_API_PORT": str(port),
           # the UI asks /ui-settings where the API is; without this it names port 4200 whatever --port says
           "PREFECT_UI_API_URL": f"http://{host}:{port}/api"}
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    return Server("Prefect", [_bin("prefect"), "server", "start", "--host", host, "--port", str(port)],
                  f"http://{host}:{port}/api/health", f"http://{host}:{port}", env)


def mlflow_server(port: int = 5000, host: str = "127.0.0.1") -> Server:
    """``mlflow server`` over the project's tracking store and artifact root."""
    backend = state.tracking_uri()
    if backend.startswith(("http://", "https://")):
        raise AdaptrailError(f"MLFLOW_TRACKING_URI points at a server already ({backend}); unset it to start one "
                             "over the local store")
    root = state.artifact_root()
    cmd = [_bin("mlflow"), "server", "--backend-store-uri", backend, "--default-artifact-root", root,
           "--artifacts-destination", root, "--host", host, "--port", str(port), "--workers", "1"]
    return Server("MLflow", cmd, f"http://{host}:{port}/health", f"http://{host}:{port}", dict(os.environ))


def start(server: Server, log_dir: Path) -> subprocess.Popen:
    """Start a server in its own process group, output to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{server.name.lower()}.log", "ab") as log:
        return subprocess.Popen(server.command, env=server.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_until_up(server: Server, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll the server's health URL; fail with its log location if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AdaptrailError(f"{server.name} server exited with code {proc.returncode}: {' '.join(server.command)}")
        try:
            with urllib.request.urlopen(server.health_url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AdaptrailError(f"{server.name} server did not answer {server.health_url} within {timeout:.0f} s")


def stop_all(procs: list[subprocess.Popen], timeout: float = 7.0) -> None:
    """Terminate the children's process groups (servers fork workers) all at once, give them ``timeout`` seconds
    together to exit, then kill what lingers: stopping two servers takes at most ``timeout`` plus a moment, not the
    sum of their shutdowns (``ui`` must be gone within 10 s of a SIGTERM)."""

    def signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass

    running = [p for p in procs if p.poll() is None]
    for proc in running:
        signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate one child's process group, then kill it if it lingers past ``timeout`` seconds."""
    stop_all([proc], timeout)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_ui(prefect_port: int = 4200, mlflow_port: int = 5000) -> None:
    """Start both servers over the project's state, print where they are, and stop both on Ctrl-C."""
    servers = [prefect_server(prefect_port), mlflow_server(mlflow_port)]
    procs: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the servers too, as Ctrl-C does
    try:
        for server in servers:
            procs.append(start(server, state.home() / "logs"))
        for server, proc in zip(servers, procs):
            wait_until_up(server, proc)
        prefect, mlflow_ = servers
        print(f"Prefect UI: {prefect.url}\nMLflow UI:  {mlflow_.url}\n"
              f"state:      {state.home()} (logs in {state.home() / 'logs'})\n\n"
              "Point flows and `adaptrail serve` in another shell at these servers:\n"
              f"  export PREFECT_API_URL={prefect.url}/api\n  export MLFLOW_TRACKING_URI={mlflow_.url}\n\n"
              "Ctrl-C stops both.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        dead = [s.name for s, p in zip(servers, procs) if p.poll() is not None]
        raise AdaptrailError(f"{', '.join(dead)} server stopped; see {state.home() / 'logs'}")
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    serve_all()
