"""The team deployment's storage for real: the ledger on PostgreSQL with concurrent writers, an MLflow tracking
server on PostgreSQL with proxied artifacts, the main flow registering through it, and a server restart in the
middle of registering that neither loses nor duplicates the version or its ledger event."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.builders import people_now
from sqlalchemy import create_engine, text

from flows.serve import Server, start, stop, wait_until_up
from tasks.governance.ledger import PG_LOCK_KEY, Ledger
from tasks.core.names import ALL_TAGS, Tag
from tests.pg import _free_port, append_events, postgres  # noqa: F401  (postgres: the session fixture)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
WRITERS, APPENDS_EACH = 4, 25
FAST = ["training.epochs=2", "training.batch_size=16", "training.learning_rate=0.01", "peft.r=4",
        "gates.bias.bootstrap_samples=50", "gates.bias.min_group_size=10", "gates.regression.min_group_size=10",
        "gates.regression.min_margin_over_baseline=-1.0"]


# --- the ledger on PostgreSQL ------------------------------------------------------------------------------


def test_concurrent_writer_processes_keep_one_valid_chain_on_postgres(postgres):
    postgres.create_database("ledger_concurrent")
    url = postgres.url("ledger_concurrent", driver="postgresql")  # a bare URL, as ADAPTRAIL_LEDGER_URL is written
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=append_events, args=(url, w, APPENDS_EACH, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    with Ledger(url) as led:
        events, report = led.events(), led.verify()
    total = WRITERS * APPENDS_EACH
    assert report.ok, report.problem
    assert report.length == total and [e.seq for e in events] == list(range(1, total + 1))
    for w in range(WRITERS):
        assert [e.reason for e in events if e.version == str(w)] == [f"append {i}" for i in range(APPENDS_EACH)]


def test_an_append_waits_for_the_advisory_lock_held_by_another_session(postgres):
    url = postgres.create_database("ledger_lock")
    done = threading.Event()
    with Ledger(url) as led:
        holder = create_engine(url)
        with holder.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            worker = threading.Thread(target=lambda: (led.append("router", "1", "reviewed", "bob"), done.set()))
            worker.start()
            assert not done.wait(1.0), "append went ahead while another session held the ledger lock"
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
        worker.join(timeout=30)
        holder.dispose()
        assert done.is_set() and led.verify().ok and led.head().seq == 1


# --- an MLflow tracking server on PostgreSQL ---------------------------------------------------------------


class MlflowServer:
    """``mlflow server`` on a PostgreSQL backend with proxied artifacts in a folder; can be killed and restarted."""

    def __init__(self, backend: str, artifacts: Path, logs: Path):
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        self.spec = Server("MLflow", cmd, f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{port}", env)
        self.artifacts, self.logs, self.proc = artifacts, logs, None

    def start(self) -> None:
        self.proc = start(self.spec, self.logs)
        wait_until_up(self.spec, self.proc, timeout=150)

    def kill(self) -> None:
        """SIGKILL the server's process group: no graceful shutdown, as in a crash."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_pg(postgres, tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-pg")
    server = MlflowServer(postgres.create_database("mlflow"), base / "artifacts", base / "logs")
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            stop(server.proc)


def _run_args(csv: Path, base: Path, model: str) -> list[str]:
    sets = [f"data.path={csv}", f"model.base={base}", f"registry.model_name={model}", *FAST]
    return ["run", "--config", str(ROOT / "configs" / "tiny.yaml")] + [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="module")
def crashed_run(postgres, mlflow_pg, prefect_harness, tickets_csv, tiny_bert, tmp_path_factory):
    """One ``adaptrail run`` pointed at the servers by URL only (as a team deployment is), whose MLflow server is
    SIGKILLed inside the register step after the version was created and before the ledger write, then restarted.
    """
    from mlflow.tracking import MlflowClient

    from flows.cli import main
    from tasks.steps import register as register_step

    model, calls = "pg-router", {"record": 0, "create": 0}
    record, create = register_step.record_registration, MlflowClient.create_model_version

    def crash_then_record(*args, **kwargs):
        calls["record"] += 1
        if calls["record"] > 1:
            return record(*args, **kwargs)
        mlflow_pg.kill()
        try:
            return record(*args, **kwargs)  # fails: the server is down
        finally:
            mlflow_pg.start()

    def counting_create(self, *args, **kwargs):
        calls["create"] += 1
        return create(self, *args, **kwargs)

    env = {"ADAPTRAIL_HOME": str(tmp_path_factory.mktemp("team-state")), "MLFLOW_TRACKING_URI": mlflow_pg.spec.url,
           "ADAPTRAIL_LEDGER_URL": postgres.create_database("ledger"),
           # fail fast on a dead server, so that the register step's own retry is what recovers
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    with pytest.MonkeyPatch.context() as mp_:
        for key, value in env.items():
            mp_.setenv(key, value)
        mp_.delenv("ADAPTRAIL_ARTIFACT_ROOT", raising=False)
        mp_.setattr(register_step, "record_registration", crash_then_record)
        mp_.setattr(MlflowClient, "create_model_version", counting_create)
        loggers = [logging.getLogger(), logging.getLogger("adaptrail")]
        saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
        try:
            code = main(_run_args(tickets_csv, tiny_bert, model))
        finally:  # the CLI binds its log handlers to this stream; undo that as the ``cli`` fixture does
            for lg, handlers, level in saved:
                lg.handlers[:], _ = handlers, lg.setLevel(level)
        yield {"code": code, "model": model, "calls": dict(calls), **env}


def _versions(url: str, model: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(url, registry_uri=url).search_model_versions(f"name='{model}'")


def _registered_events(ledger_url: str, model: str):
    with Ledger(ledger_url) as led:
        return [e for e in led.events(model=model) if e.action == "registered"], led.verify()


@pytest.mark.timeout(400)
def test_a_server_crash_during_register_is_retried_without_a_lost_or_duplicate_version(crashed_run):
    run = crashed_run
    assert run["calls"] == {"record": 2, "create": 1}  # the register step ran twice and created the version once
    (version,) = _versions(run["MLFLOW_TRACKING_URI"], run["model"])
    registered, chain = _registered_events(run["ADAPTRAIL_LEDGER_URL"], run["model"])
    assert [e.version for e in registered] == [str(version.version)] and chain.ok
    status = registered[0].extra["tags"][Tag.APPROVAL_STATUS]
    assert version.tags[Tag.APPROVAL_STATUS] == status
    assert run["code"] == {"pending": 0, "rejected": 3}[status]  # the exit code says what was registered


@pytest.mark.timeout(200)
def test_the_flow_registered_through_the_mlflow_server_with_the_ledger_on_the_same_postgres(
        crashed_run, postgres, mlflow_pg, cli, monkeypatch, capsys):
    run, model = crashed_run, crashed_run["model"]
    (version,) = _versions(run["MLFLOW_TRACKING_URI"], model)
    assert not [t for t in ALL_TAGS if not version.tags.get(t)]
    assert version.source.startswith("mlflow-artifacts:"), version.source  # proxied through the server
    stored = list(mlflow_pg.artifacts.rglob("adapter/manifest.json"))
    assert len(stored) == 1 and version.run_id in str(stored[0])
    with create_engine(postgres.url("mlflow")).connect() as conn:  # the registry really is PostgreSQL
        assert conn.execute(text("SELECT count(*) FROM model_versions WHERE name = :n"), {"n": model}).scalar() == 1

    # a reviewer approves and a consumer verifies: the adapter comes back through the server, checked
    for key in ("ADAPTRAIL_HOME", "MLFLOW_TRACKING_URI", "ADAPTRAIL_LEDGER_URL"):
        monkeypatch.setenv(key, run[key])
    monkeypatch.delenv("ADAPTRAIL_ARTIFACT_ROOT", raising=False)
    people = people_now()  # a signed policy in the PostgreSQL ledger; alice (and bob, when gates failed) sign
    for name in ("alice", "bob") if run["code"] else ("alice",):
        extra = ["--override"] if run["code"] else []
        assert cli(["approve", model, str(version.version), "--reason", "reviewed", "--key", people[name].source,
                    *extra]) == 0
    assert cli(["verify", f"{model}@champion"]) == 0, capsys.readouterr()
