"""A real, throw-away PostgreSQL server for tests (session-scoped fixture ``postgres``).

initdb refuses to run as root, so as root the server runs as the ``postgres`` OS user (``runuser``). It lives in a
temp dir under /tmp (readable by that user), listens on a free loopback port with trust auth, and is stopped and
removed at the end. Without PostgreSQL binaries the tests skip, unless ``ADAPTRAIL_REQUIRE_POSTGRES=1`` (set by
``.ci/run``, which installs them) turns that into a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV_REQUIRE = "ADAPTRAIL_REQUIRE_POSTGRES"
OS_USER = "postgres"
DB_USER = "adaptrail"


def pg_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian layout first, then PATH)."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running server: ``url(db)`` gives a SQLAlchemy URL; ``create_database`` makes a fresh database."""

    bin_dir: Path
    root: Path
    port: int
    as_user: list[str]  # command prefix that runs a binary as the server's OS user

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [*self.as_user, str(self.bin_dir / args[0]), *args[1:]]
        done = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (owned by the test role); returns its URL."""
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER, name)
        return self.url(name)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        try:
            self.run("pg_ctl", "-D", str(self.data_dir), "-o", opts, "-l", str(self.root / "server.log"), "-w",
                     "-t", "60", "start")
        except RuntimeError as err:
            log = (self.root / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{err}\nserver log:\n{log}") from err

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                        "stop"], cwd=self.root, capture_output=True, timeout=60)


def _as_server_user() -> list[str]:
    """As root: run as the ``postgres`` OS user; otherwise as ourselves."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        pytest.fail(f"running as root but there is no '{OS_USER}' OS user to run PostgreSQL as; "
                    "install postgresql-15 (it creates the user) or run the tests as an unprivileged user")
    return ["runuser", "-u", OS_USER, "--"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """Start a PostgreSQL server for the session; skip (or fail, in CI) when PostgreSQL is not installed."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        message = ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH); "
                   "install it with `apt-get install -y postgresql-15`")
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but {message}")
        pytest.skip(message)
    as_user = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="adaptrail-pg-"))
    if as_user:
        shutil.chown(root, OS_USER, OS_USER)
    server = PgServer(bin_dir, root, _free_port(), as_user)
    server.run("initdb", "-D", str(server.data_dir), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-locale")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def append_events(url: str, worker: int, count: int, barrier) -> None:
    """A ledger writer for a spawned process (lives here so the child imports nothing heavy)."""
    from tasks.governance.ledger import Ledger

    with Ledger(url) as led:
        barrier.wait()
        for i in range(count):
            led.append("router", str(worker), "reviewed", f"worker{worker}", reason=f"append {i}")
