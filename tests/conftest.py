"""Shared fixtures: an isolated state directory, tiny random-init base models, small data sets."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Isolate all state before any project module (and so prefect/mlflow) is imported.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="adaptrail-test-"))
os.environ["ADAPTRAIL_HOME"] = str(_SESSION_HOME)
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("ADAPTRAIL_LEDGER_URL", None)
os.environ.setdefault("ADAPTRAIL_USER", "test-requester")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tasks.core.state import apply_environment_defaults  # noqa: E402

apply_environment_defaults()  # the suite is an entry point, like the CLI

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()


def shared_data(relative: str) -> Path:
    """A real data set under ../shared/data, or skip the test with a message."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture
def state_home(tmp_path, monkeypatch) -> Path:
    """A fresh MLflow store, artifact root and ledger for one test."""
    home = tmp_path / "state"
    monkeypatch.setenv("ADAPTRAIL_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ADAPTRAIL_ARTIFACT_ROOT", raising=False)
    return home


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory):
    """An MLflow database with its tables already created (creating them takes seconds per test otherwise)."""
    home = tmp_path_factory.mktemp("mlflow-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTRAIL_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        __import__("tasks.governance.registry").governance.registry.client().search_registered_models()
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home / "mlflow.db"


@pytest.fixture
def home(state_home, mlflow_db):
    state_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_db, state_home / "mlflow.db")
    return state_home


@pytest.fixture
def people(home):
    """A signed policy in the ledger and everyone's keys (``tests.builders.setup_people``): name -> Signer."""
    from tests.builders import setup_people

    return setup_people(home)


@pytest.fixture
def cli():
    """``adaptrail`` in-process; its logging setup (bound to this test's captured stderr) is undone afterwards."""
    import logging

    from flows.cli import main

    loggers = [logging.getLogger(), logging.getLogger("adaptrail")]
    saved = [(lg, lg.handlers[:], lg.level) for lg in loggers]
    yield main
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


@pytest.fixture(scope="session")
def tickets() -> pd.DataFrame:
    """A small slice of the example support-ticket data (real generator, 600 rows)."""
    from tasks.data.example import generate_support_tickets

    return generate_support_tickets(n_rows=600, seed=11)


@pytest.fixture(scope="session")
def tickets_csv(tickets, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tickets.csv"
    tickets.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tickets, tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random-init BERT with a word vocabulary from the tickets."""
    from tasks.training.tiny_model import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), list(tickets["text"]))


def _follow_live_stderr() -> None:
    """Prefect's console handlers write to the stream bound when logging was configured; make them follow
    ``sys.stderr`` instead, so a test's closed capture stream is never written to by a later test."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, PrefectConsoleHandler):  # Prefect's logging config sends them to stderr
                h.console.stderr = True
                h.console.file = None  # rich then resolves sys.stderr at each write


@pytest.fixture(autouse=True)
def _prefect_logs_follow_stderr():
    """Re-applied per test: Prefect may reconfigure logging (and rebind its handlers) at any flow run."""
    import sys

    if "prefect.logging.handlers" in sys.modules:
        _follow_live_stderr()
    yield


@pytest.fixture(scope="session")
def prefect_harness():
    """A real, temporary Prefect API for whole-flow tests.

    Importing prefect here (before any test's capsys) binds Prefect's log handlers to pytest's session-wide
    capture rather than to one test's stream, which is closed when that test ends.
    """
    import prefect  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    _follow_live_stderr()

    with prefect_test_harness(server_startup_timeout=120):
        yield


from tests.servers import served, servers  # noqa: E402,F401  (real Prefect and MLflow servers, session-wide)
