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
    """``ADAPTRAIL_USER``, else the OS user."""
    return os.environ.get("ADAPTRAIL_USER") or os_user()


def os_user() -> str:
    """The OS user running this process (``uid-N`` where there is no passwd entry, as in some containers)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - getpass raises OSError, KeyError or ImportError depending on the platform
        return f"uid-{os.getuid()}"


#: Environment defaults the entry points apply (never overriding a value already set).
ENV_DEFAULTS: dict[str, str] = {
    # The embedded (ephemeral) Prefect API starts in a subprocess; a busy 2-core machine needs more than 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "adaptrail",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Offline by design: the base model comes from disk, never from a hub at run time.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # MLflow reads DO_NOT_TRACK only as "true"; its telemetry client also sets and unsets an environment variable
    # from whichever thread (re)creates it, which races with requests iterating os.environ in another thread.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def apply_environment_defaults() -> None:
    """Set the defaults that must be in place before prefect/transformers are imported, and Prefect's home under
    the state directory. Called once by each entry point (the flows package, the CLI, the test suite, benches)."""
    os.environ.setdefault("PREFECT_HOME", str(home() / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
