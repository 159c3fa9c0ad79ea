"""Where a version came from: code version, who asked, which flow run."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # tasks/core/lineage.py -> the project


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version() -> str:
    """The project's git commit (``-dirty`` when tracked files are modified), else the package version."""
    commit = _git("rev-parse", "HEAD")
    if commit:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return commit + ("-dirty" if dirty else "")
    try:
        return "adaptrail==" + importlib.metadata.version("adaptrail")
    except importlib.metadata.PackageNotFoundError:
        return "adaptrail==unknown"


def flow_run_id() -> str:
    """The Prefect flow run that is executing, or 'none' outside a flow run."""
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else "none"
    except Exception:
        return "none"
