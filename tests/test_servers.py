"""The flows as deployments: prefect.yaml and ``flows.serve`` describe them; a real Prefect server and MLflow server
run one ``train_adapter`` triggered through the API the way the UI does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.compliance_audit import SEMIANNUAL_CRON
from flows.monitor_adapter import WEEKLY_CRON
from flows.serve import DEFAULT_CONFIG, DEPLOYMENT_NAME, deployments, stop
from tasks.core.config import Config
from tasks.core.config_files import load_config
from tasks.core.names import ALL_TAGS, Tag
from tests.servers import FAST, free_port as _free_port, server_env, tail as _tail, \
    wait_for_deployment as _wait_for_deployment

ROOT = Path(__file__).resolve().parents[1]
FLOWS = {"train_adapter", "compare_methods", "review_adapter", "compliance_audit", "approval_reminders",
         "monitor_adapter"}


def _prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))


def test_prefect_yaml_entrypoints_load_as_the_flows_on_the_process_pool():
    from prefect.flows import load_flow_from_entrypoint

    spec = _prefect_yaml()
    names = set()
    for dep in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / dep["entrypoint"]))
        names.add(flow.name)
        assert dep["work_pool"]["name"] == "adaptrail-pool"
        assert dep["description"] and "adaptrail" in dep["tags"]
    assert names == FLOWS


def test_prefect_yaml_schedules_only_the_audit_semiannually_and_its_train_form_is_a_valid_config():
    from prefect.client.schemas.schedules import CronSchedule

    by_flow = {dep["entrypoint"].rsplit(":", 1)[1]: dep for dep in _prefect_yaml()["deployments"]}
    (sched,) = by_flow["compliance_audit"]["schedules"]
    cron = CronSchedule(cron=sched["cron"], timezone=sched["timezone"])
    assert cron.cron == SEMIANNUAL_CRON and cron.timezone == "UTC"
    assert not by_flow["train_adapter_flow"].get("schedules") and not by_flow["review_adapter"].get("schedules")
    (weekly,) = by_flow["monitor_adapter"]["schedules"]  # monitoring reads where production texts land, weekly
    assert (weekly["cron"], weekly["timezone"]) == (WEEKLY_CRON, "UTC")
    assert by_flow["monitor_adapter"]["parameters"]["model"].endswith("@champion")
    config = Config.model_validate(by_flow["train_adapter_flow"]["parameters"]["config"])
    assert config.data.label_column == load_config(DEFAULT_CONFIG).data.label_column


def test_served_deployments_prefill_the_default_config_and_schedule_the_audit():
    deps = {d.flow_name: d for d in deployments()}
    assert set(deps) == FLOWS and all(d.name == DEPLOYMENT_NAME and d.description for d in deps.values())
    assert deps["train_adapter"].parameters["config"] == load_config(DEFAULT_CONFIG).model_dump(mode="json")
    assert "config" in deps["train_adapter"]._parameter_openapi_schema.properties
    (sched,) = deps["compliance_audit"].schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == (SEMIANNUAL_CRON, "UTC")
    assert not deps["train_adapter"].schedules and not deps["review_adapter"].schedules
    (weekly,) = deps["monitor_adapter"].schedules
    assert (weekly.schedule.cron, weekly.schedule.timezone) == (WEEKLY_CRON, "UTC")
    assert set(deps["monitor_adapter"].parameters) == {"model", "data"}


# --- real servers ------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(420)
def test_a_run_triggered_through_the_prefect_api_registers_a_tagged_version_in_the_mlflow_server(
        servers, served, tickets_csv, tiny_bert):
    from mlflow.tracking import MlflowClient
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = load_config(ROOT / "configs" / "tiny.yaml",
                         [f"data.path={tickets_csv}", f"model.base={tiny_bert}", *FAST]).model_dump(mode="json")
    name = f"train_adapter/{DEPLOYMENT_NAME}"
    with temporary_settings(updates={PREFECT_API_URL: servers["prefect"] + "/api"}):
        _wait_for_deployment(name, served)
        run = run_deployment(name, parameters={"config": config, "requested_by": "ui-user"}, timeout=300,
                             poll_interval=2, as_subflow=False)
    assert run.state is not None and run.state.is_completed(), f"flow run {run.state}; serve log:\n{_tail(served)}"
    with urllib.request.urlopen(servers["prefect"] + "/ui-settings", timeout=10) as resp:
        assert json.load(resp)["api_url"] == servers["prefect"] + "/api"  # the UI talks to this server

    client = MlflowClient(tracking_uri=servers["mlflow"], registry_uri=servers["mlflow"])
    (version,) = client.search_model_versions("name='support-ticket-router'")
    missing = [t for t in ALL_TAGS if not version.tags.get(t)]
    assert not missing, f"tags missing or empty: {missing}"
    assert version.tags[Tag.FLOW_RUN_ID] == str(run.id)
    assert version.tags[Tag.REQUESTED_BY] == "ui-user"
    assert version.tags[Tag.GATE_VALIDATION] == "passed"


def _stops_cleanly_on_sigterm(proc: subprocess.Popen, log_path: Path, within: float = 10.0) -> None:
    """SIGTERM to the process alone (as systemd or ``docker stop`` send it): it exits within ``within`` seconds and
    leaves none of its children (servers, workers, MLflow job consumers) behind."""
    import signal

    import psutil

    family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"still running {within:.0f} s after SIGTERM; log:\n{_tail(log_path)}")
    time.sleep(1)
    left = [p for p in family if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left after SIGTERM: {[psutil.Process(p).cmdline() for p in left]}"


def _spawn_cli(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_serve_and_ui_stop_on_sigterm_with_their_children(servers, tmp_path):
    env = {**server_env(servers), "PREFECT_HOME": str(tmp_path / "prefect-client")}
    serve_log = tmp_path / "serve.log"
    serving = _spawn_cli(["serve"], env, serve_log)
    deadline = time.monotonic() + 120
    while b"being served" not in serve_log.read_bytes() and time.monotonic() < deadline:
        assert serving.poll() is None, f"serve exited: {_tail(serve_log)}"
        time.sleep(1)
    _stops_cleanly_on_sigterm(serving, serve_log)

    ui_env = {k: v for k, v in env.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    ui_env["ADAPTRAIL_HOME"] = str(tmp_path / "ui-state")
    ui_log = tmp_path / "ui.log"
    ui = _spawn_cli(["ui", "--prefect-port", str(_free_port()), "--mlflow-port", str(_free_port())], ui_env, ui_log)
    deadline = time.monotonic() + 180
    while b"Ctrl-C stops both" not in ui_log.read_bytes() and time.monotonic() < deadline:
        assert ui.poll() is None, f"ui exited: {_tail(ui_log)}"
        time.sleep(1)
    _stops_cleanly_on_sigterm(ui, ui_log)
