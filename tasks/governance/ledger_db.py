"""The ledger's database: engines for SQLite and PostgreSQL (writers begin as writers) and the append-only guards
(triggers that refuse UPDATE, DELETE and TRUNCATE of ledger rows)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InternalError, OperationalError, ProgrammingError

from tasks.core.errors import InputError

TABLE_NAME = "approval_ledger"
SQLITE_BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "adaptrail_ledger_write"  # execution option: begin this connection's transaction as a writer


# --- append-only guards: the database itself refuses UPDATE, DELETE and TRUNCATE of ledger rows ----------------

GUARD_FUNCTION = f"{TABLE_NAME}_append_only"
_SQLITE_GUARDS = {
    f"{TABLE_NAME}_no_update": f"CREATE TRIGGER IF NOT EXISTS {TABLE_NAME}_no_update BEFORE UPDATE ON {TABLE_NAME} "
                               f"BEGIN SELECT RAISE(ABORT, '{TABLE_NAME} is append-only: UPDATE refused'); END",
    f"{TABLE_NAME}_no_delete": f"CREATE TRIGGER IF NOT EXISTS {TABLE_NAME}_no_delete BEFORE DELETE ON {TABLE_NAME} "
                               f"BEGIN SELECT RAISE(ABORT, '{TABLE_NAME} is append-only: DELETE refused'); END",
}
_PG_GUARDS = {
    f"{TABLE_NAME}_no_change": f"CREATE TRIGGER {TABLE_NAME}_no_change BEFORE UPDATE OR DELETE ON {TABLE_NAME} "
                               f"FOR EACH ROW EXECUTE FUNCTION {GUARD_FUNCTION}()",
    f"{TABLE_NAME}_no_truncate": f"CREATE TRIGGER {TABLE_NAME}_no_truncate BEFORE TRUNCATE ON {TABLE_NAME} "
                                 f"FOR EACH STATEMENT EXECUTE FUNCTION {GUARD_FUNCTION}()",
}
_PG_FUNCTION = (f"CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"RAISE EXCEPTION '{TABLE_NAME} is append-only: % refused', TG_OP; END $$")


def missing_guards(conn: Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        have = {r[0] for r in conn.execute(text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"), {"t": TABLE_NAME})}
        wanted = _PG_GUARDS
    else:
        have = {r[0] for r in conn.execute(text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"), {"t": TABLE_NAME})}
        wanted = _SQLITE_GUARDS
    return sorted(set(wanted) - have)


def install_guards(conn: Connection) -> None:
    """Create the append-only triggers that are missing. Where the connecting role may not (the team deployment's
    application role owns nothing: infra/postgres creates the triggers as the owner), the audit reports them."""
    missing = missing_guards(conn)
    if not missing:
        return
    if conn.dialect.name == "postgresql":
        try:
            with conn.begin_nested():  # a refused CREATE rolls back to here, not the surrounding transaction
                conn.execute(text(_PG_FUNCTION))
                for name in missing:
                    conn.execute(text(_PG_GUARDS[name]))
        except (ProgrammingError, InternalError):  # insufficient privilege: not the table's owner
            pass
    else:
        for name in missing:
            conn.exec_driver_sql(_SQLITE_GUARDS[name])


def with_installed_driver(url: URL) -> URL:
    """A bare ``postgresql://`` URL with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg (3), while
    ``pip install .[postgres]`` brings psycopg2 (the driver MLflow's ``postgresql+psycopg2://`` store uses)."""
    if url.drivername != "postgresql":
        return url
    for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.set(drivername=driver)
    raise InputError(f"no PostgreSQL driver for {url.render_as_string(hide_password=True)}; "
                     'install one with `pip install ".[postgres]"` (psycopg2-binary)')


def make_engine(url: str) -> Engine:
    """Engine for ``url``; on SQLite, SQLAlchemy emits BEGIN (IMMEDIATE for writers) instead of pysqlite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(with_installed_driver(parsed), pool_pre_ping=True)
    db = parsed.database
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not issue its own (deferred, late) BEGIN
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "BEGIN")

    return engine


def is_lock_timeout(e: OperationalError) -> bool:
    """A writer that waited too long for the ledger's write lock (worth another attempt)."""
    msg = str(e.orig).lower()
    return "locked" in msg or "busy" in msg or "lock timeout" in msg
