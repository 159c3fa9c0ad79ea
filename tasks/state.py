"""Where adaptrail keeps its state, and the environment defaults applied before Prefect/MLflow load.

Every location is overridable by an environment variable (README: "Where things are"):

- ``ADAPTRAIL_HOME``: the state directory (default ``./.adaptrail``).
- ``MLFLOW_TRACKING_URI``: MLflow backend (default SQLite ``$ADAPTRAIL_HOME/mlflow.db``).
- ``ADAPTRAIL_ARTIFACT_ROOT``: artifact root for new experiments (default ``$ADAPTRAIL_HOME/mlartifacts``, or the
  tracking server's own artifact store when ``MLFLOW_TRACKING_URI`` is a server URL).
- ``ADAPTRAIL_LEDGER_URL``: the approval ledger's database (read by ``tasks.ledger.ledger_url``).
- ``PREFECT_API_URL``: a Prefect server (read by Prefect itself; unset: an embedded temporary API).
- ``PREFECT_HOME``: Prefect's home (default ``$ADAPTRAIL_HOME/prefect``).
- ``ADAPTRAIL_USER``: the identity recorded as ``lineage.requested_by`` (default: OS user).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("ADAPTRAIL_HOME", ".adaptrail")).resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home() / 'mlflow.db'}"


def is_tracking_server(uri: str | None = None) -> bool:
    """True when the tracking URI is an MLflow server (http/https) rather than a database or folder."""
    return (uri or tracking_uri()).startswith(("http://", "https://"))


def artifact_root() -> str | None:
    """Where new experiments keep artifacts; None means the tracking server decides (its proxied store), so a
    worker on another machine never records a path that exists only on its own disk."""
    root = os.environ.get("ADAPTRAIL_ARTIFACT_ROOT")
    if root:
        return root
    return None if is_tracking_server() else (home() / "mlartifacts").as_uri()


def runs_dir() -> Path:
    """Scratch space for a flow run's local files before they are logged."""
    return home() / "runs"


def current_user() -> str:
    user = os.environ.get("ADAPTRAIL_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return f"uid-{os.getuid()}"


def apply_environment_defaults() -> None:
    """Set defaults that must be in place before prefect/transformers are imported."""
    h = home()
    os.environ.setdefault("PREFECT_HOME", str(h / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # The embedded (ephemeral) Prefect API starts in a subprocess; a busy 2-core machine needs more than 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "adaptrail")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Offline by design: the base model comes from disk, never from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # MLflow reads DO_NOT_TRACK only as "true"; its telemetry client also sets and unsets an environment variable
    # from whichever thread (re)creates it, which races with requests iterating os.environ in another thread.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
