"""A state directory that was moved or copied: detect it, and rewrite the absolute paths MLflow recorded.

MLflow's SQLite store records every artifact location as an absolute ``file://`` URI (experiments, runs, model
versions, logged models). After ``mv .adaptrail elsewhere`` those point at a folder that is gone; after ``cp -r``
they point at the *old* folder, and new runs would keep writing there. :func:`moved_from` names the old location so
that commands refuse with the fix; :func:`relocate` rewrites the recorded paths, in one transaction, to this state.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tasks.core import state
from tasks.core.errors import InputError

ARTIFACTS = "mlartifacts"
#: Every column of MLflow's store that holds an artifact location (MLflow 3).
PATH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
    ("model_versions", "storage_location"), ("logged_models", "artifact_location"))


def _default_store() -> Path | None:
    """The SQLite file of the default state (None when a tracking URI or artifact root is set explicitly)."""
    if os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("ADAPTRAIL_ARTIFACT_ROOT"):
        return None
    db = state.home() / "mlflow.db"
    return db if db.is_file() else None


def here() -> str:
    return (state.home() / ARTIFACTS).as_uri()


def moved_from() -> str | None:
    """The artifact root recorded in this state's database when it is not this state's own (the directory was moved
    or copied); None when the paths are this directory's, or the store is not the default SQLite one."""
    db = _default_store()
    if db is None:
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        locations = [r[0] for r in con.execute("SELECT artifact_location FROM experiments")]
    for loc in locations:
        if loc and loc.startswith("file://") and f"/{ARTIFACTS}/" in loc and not loc.startswith(here() + "/"):
            return loc.rsplit(f"/{ARTIFACTS}/", 1)[0] + f"/{ARTIFACTS}"
    return None


def require_in_place() -> None:
    """Refuse to read or write a state whose recorded artifact paths belong to another directory."""
    old = moved_from()
    if old is not None:
        raise InputError(f"the state directory {state.home()} was moved or copied: its mlflow.db records artifacts "
                         f"under {old} (MLflow stores absolute paths), so runs would read and write there; run "
                         "`adaptrail relocate` to point the recorded paths at this directory, or set ADAPTRAIL_HOME "
                         "back to the original")


def relocate() -> dict[str, int]:
    """Rewrite every recorded artifact path from the old root to this state's ``mlartifacts``; rows changed per
    column. Refuses when the artifact files are not here (copy the whole state directory, mlartifacts included)."""
    old = moved_from()
    if old is None:
        raise InputError(f"nothing to relocate: the paths recorded in {state.home() / 'mlflow.db'} are this "
                         "directory's (or the store is not the default SQLite one)")
    if not (state.home() / ARTIFACTS).is_dir():
        raise InputError(f"{state.home() / ARTIFACTS} is missing: copy the whole state directory (mlartifacts "
                         "included), then relocate")
    new, changed = here(), {}
    con = sqlite3.connect(str(state.home() / "mlflow.db"))
    try:
        with con:  # one transaction: every path rewritten, or none
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, column in PATH_COLUMNS:
                if table in tables:
                    cur = con.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                                      f"WHERE substr({column}, 1, ?) = ?", (new, len(old) + 1, len(old), old))
                    changed[f"{table}.{column}"] = cur.rowcount
    finally:
        con.close()
    return changed
