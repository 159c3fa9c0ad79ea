"""The approval ledger: an append-only, hash-chained table of approval events (DESIGN.md: Approval ledger).

Each row's ``hash`` is sha256 over the canonical JSON of all its other columns, ``prev_hash`` included, so
editing, deleting or reordering any row breaks :meth:`Ledger.verify`. Removing rows from the *end* leaves a
valid, shorter chain: the audit compares ``ChainReport.head_hash``/``length`` against what it expects.

Writers are serialised: the head is read and the next row inserted in one transaction that holds the
database's write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``pg_advisory_xact_lock``). UNIQUE constraints
on ``seq`` and ``prev_hash`` stop a fork of the chain if that lock is ever bypassed; conflicts are retried.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Column, Connection, Index, Integer, MetaData, String, Table, Text, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from tasks.core.canonical import canonical_json, json_sha256
from tasks.core.errors import AdaptrailError, InputError
from tasks.governance import checkpoints
from tasks.governance.ledger_db import (TABLE_NAME, WRITE_OPTION, install_guards, is_lock_timeout, make_engine,
                                        missing_guards)
from tasks.core.state import home

ACTIONS = ("registered", "gate_failed", "approved", "rejected", "overridden", "expired", "revoked", "reviewed",
           "policy", "reproduced", "monitored", "review_required")
GENESIS_HASH = "0" * 64
#: How far an event's time may lie ahead of this machine's clock (clock skew between machines); no further.
MAX_CLOCK_SKEW = timedelta(minutes=5)

APPEND_ATTEMPTS = 5
# Any constant shared by all writers; the advisory lock serialises appends across PostgreSQL sessions.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(TABLE_NAME.encode()).digest()[:7], "big")

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

metadata = MetaData()
ledger_table = Table(
    TABLE_NAME,
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),
    Column("model", String(255), nullable=False),
    Column("version", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence_digest", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("extra", Text, nullable=False),
    Index(f"ix_{TABLE_NAME}_model_version", "model", "version"),
)


class LedgerBusy(AdaptrailError):
    """Appending kept conflicting with other writers; nothing was written."""


class LedgerConflict(InputError):
    """The version's last event is no longer the one the caller checked (a concurrent decision); nothing was written."""


class LedgerTimeConflict(LedgerConflict):
    """The event's time lies before the ledger's last event (another writer was first); nothing was written."""


#: ``expect_last`` default: append whatever the version's history (no compare-and-swap).
ANY_LAST = object()


def ledger_url() -> str:
    """``ADAPTRAIL_LEDGER_URL`` if set, else a SQLite file beside the other state: ``$ADAPTRAIL_HOME/ledger.db``."""
    return os.environ.get("ADAPTRAIL_LEDGER_URL") or f"sqlite:///{home() / 'ledger.db'}"


def evidence_digest(evidence: dict) -> str:
    """sha256 of the evidence's canonical JSON: independent of key order."""
    if not isinstance(evidence, dict):
        raise InputError(f"evidence must be a dict, got {type(evidence).__name__}")
    return json_sha256(evidence)


def format_at(at: datetime | str | None = None) -> str:
    """UTC ISO-8601 with microseconds and 'Z' (fixed width, so text order is time order); now if None."""
    if at is None:
        dt = datetime.now(timezone.utc)
    elif isinstance(at, datetime):
        dt = at
    elif isinstance(at, str):
        try:
            dt = datetime.fromisoformat(at)
        except ValueError as e:
            raise InputError(f"time {at!r} is not ISO-8601; write e.g. 2025-01-31T12:00:00Z") from e
    else:
        raise InputError(f"time must be a datetime or ISO-8601 string, got {type(at).__name__}")
    if dt.tzinfo is None:
        raise InputError(f"time {at!r} has no timezone; give UTC explicitly (suffix 'Z' or '+00:00')")
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    at: str
    model: str
    version: str
    action: str
    actor: str
    reason: str
    evidence_digest: str
    prev_hash: str
    hash: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChainReport:
    ok: bool
    length: int
    head_hash: str
    first_broken_seq: int | None = None
    problem: str = ""


def row_hash(fields: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of every column except ``hash`` (``extra`` as parsed JSON)."""
    content = {k: v for k, v in fields.items() if k != "hash"}
    return json_sha256(content)


class Ledger:
    """Append-only access to the ledger table; creates the table if absent. Offers no update or delete."""

    def __init__(self, url: str | None = None):
        self.url = url or ledger_url()
        self._engine = make_engine(self.url)
        with self._write() as conn:  # serialised, so concurrent first use cannot race on CREATE TABLE
            metadata.create_all(conn, checkfirst=True)
            install_guards(conn)

    # --- writing ---------------------------------------------------------------------------------------

    def append(self, model: str, version: str, action: str, actor: str, reason: str = "", evidence_digest: str = "",
               extra: dict | None = None, at: datetime | str | None = None, *,
               expect_last: int | None | object = ANY_LAST) -> LedgerEvent:
        """Append one event after the current head, atomically; returns it with its seq and hash.

        ``expect_last`` is a compare-and-swap on the version's history: the seq of the version's last event the
        caller's rules were checked against (None: no event yet). Inside the write lock the ledger re-reads it and
        appends only if it is unchanged, else raises :class:`LedgerConflict`.
        """
        fields = normalised_fields(model, version, action, actor, reason, evidence_digest, extra, at)
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    if expect_last is not ANY_LAST:
                        _check_last(conn, fields["model"], fields["version"], expect_last)
                    head = conn.execute(
                        select(ledger_table.c.seq, ledger_table.c.hash, ledger_table.c.at).order_by(ledger_table.c.seq.desc()).limit(1)
                    ).first()
                    seq, prev_hash = (head.seq + 1, head.hash) if head else (1, GENESIS_HASH)
                    latest = _latest_sane_time(conn)  # a forged row dated in the future does not stop writes
                    if latest and fields["at"] < latest:
                        if at is not None:
                            raise LedgerTimeConflict(f"event time {fields['at']} is before the ledger's last event "
                                                     f"({latest}): ledger times never go backwards; nothing was "
                                                     "recorded (decide again)")
                        fields["at"] = latest  # "now", read before the lock: never earlier than the head
                    row = {"seq": seq, **fields, "prev_hash": prev_hash}
                    row["hash"] = row_hash(row)
                    conn.execute(ledger_table.insert().values(**{**row, "extra": canonical_json(row["extra"])}))
                    first = row["hash"] if seq == 1 else conn.execute(
                        select(ledger_table.c.hash).where(ledger_table.c.seq == 1)).scalar()
                checkpoints.record(first or "", seq, row["hash"], row["at"], "append")  # outside the database
                return LedgerEvent(**row)
            except (IntegrityError, OperationalError) as e:
                # IntegrityError: another writer took this seq (lock bypassed); OperationalError: lock timeout.
                if isinstance(e, OperationalError) and not is_lock_timeout(e):
                    raise
                if attempt == APPEND_ATTEMPTS:
                    raise LedgerBusy(
                        f"could not append to the ledger at {self._safe_url()} after {attempt} attempts "
                        f"({type(e).__name__}: {e.orig}); check for a stuck writer and retry"
                    ) from e
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    # --- reading ---------------------------------------------------------------------------------------

    def events(self, model: str | None = None, version: str | None = None, since: datetime | str | None = None,
               until: datetime | str | None = None) -> list[LedgerEvent]:
        """Events in seq order, optionally for one model/version and within ``since <= at < until``."""
        stmt = select(ledger_table).order_by(ledger_table.c.seq)
        if model is not None:
            stmt = stmt.where(ledger_table.c.model == model)
        if version is not None:
            stmt = stmt.where(ledger_table.c.version == str(version))
        if since is not None:
            stmt = stmt.where(ledger_table.c.at >= format_at(since))
        if until is not None:
            stmt = stmt.where(ledger_table.c.at < format_at(until))
        with self._read() as conn:
            return [_to_event(r._asdict()) for r in conn.execute(stmt)]

    def latest(self, model: str, version: str, actions: Iterable[str] | None = None) -> LedgerEvent | None:
        """The most recent event for this version, optionally only among ``actions``."""
        stmt = (
            select(ledger_table)
            .where(ledger_table.c.model == model, ledger_table.c.version == str(version))
            .order_by(ledger_table.c.seq.desc())
            .limit(1)
        )
        if actions is not None:
            actions = list(actions)
            for a in actions:
                _check_action(a)
            stmt = stmt.where(ledger_table.c.action.in_(actions))
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return _to_event(row._asdict()) if row else None

    def hashes(self) -> dict[int, str]:
        """seq -> stored hash of every row (what checkpoints are compared with)."""
        with self._read() as conn:
            return {r.seq: r.hash for r in conn.execute(select(ledger_table.c.seq, ledger_table.c.hash))}

    def checkpoint_problems(self, extra: list[checkpoints.Checkpoint] = (), known_key: Any = None,
                            hashes: dict[int, str] | None = None) -> tuple[list[str], list[str]]:
        """(critical, high): earlier checkpoints of this ledger (the store's, plus ``extra`` from elsewhere, e.g.
        earlier audits) whose head is no longer in the chain at its seq; a missing store for a non-empty ledger;
        store lines signed by a key ``known_key`` does not accept. ``hashes``: :meth:`hashes`, if already read."""
        hashes = self.hashes() if hashes is None else hashes
        if not hashes:
            return [], []
        return checkpoints.problems(hashes, checkpoints.read(hashes.get(1, "")), list(extra), known_key)

    def head(self) -> LedgerEvent | None:
        """The last event of the chain (None when the ledger is empty)."""
        with self._read() as conn:
            row = conn.execute(select(ledger_table).order_by(ledger_table.c.seq.desc()).limit(1)).first()
        return _to_event(row._asdict()) if row else None

    def verify(self) -> ChainReport:
        """Recompute every row's hash and link; report the first broken seq and what is wrong with it."""
        return self._scan(keep_events=False)[0]

    def verified_events(self) -> tuple[ChainReport, list[LedgerEvent]]:
        """:meth:`verify` and :meth:`events` (all, past a break too) from one scan of one snapshot."""
        return self._scan(keep_events=True)

    def _scan(self, keep_events: bool) -> tuple[ChainReport, list[LedgerEvent]]:
        length, prev_seq, prev_hash, broken, events = 0, 0, GENESIS_HASH, None, []
        with self._read() as conn:
            for r in conn.execute(select(ledger_table).order_by(ledger_table.c.seq)):
                row = r._asdict()
                events += [_to_event(row)] if keep_events else []
                if broken is None:
                    length += 1
                    problem = _row_problem(row, prev_seq, prev_hash)
                    if problem:
                        broken = ChainReport(False, length, prev_hash, row["seq"], f"row seq={row['seq']}: {problem}")
                    prev_seq, prev_hash = row["seq"], row["hash"]
        return broken or ChainReport(True, length, prev_hash), events

    # --- plumbing --------------------------------------------------------------------------------------

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that holds the ledger's write lock from its first statement to commit."""
        with self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for multi-row reads such as verify."""
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def missing_guards(self) -> list[str]:
        """The append-only triggers this database lacks ([] when UPDATE, DELETE (and TRUNCATE) are all refused)."""
        with self._read() as conn:
            return missing_guards(conn)

    def _safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)


def _check_last(conn: Connection, model: str, version: str, expected: Any) -> None:
    """Inside the write lock: the version's last seq must still be ``expected``."""
    last = conn.execute(select(func.max(ledger_table.c.seq)).where(
        ledger_table.c.model == model, ledger_table.c.version == version)).scalar()
    if last != expected:
        raise LedgerConflict(f"{model} v{version} changed while this decision was being made (its last ledger event "
                             f"is now seq {last}, the decision checked seq {expected}); nothing was recorded. Look "
                             "at the version again and repeat the decision if it still applies")


def _latest_sane_time(conn: Connection) -> str | None:
    """The latest event time not ahead of this clock (plus skew): what a new event may not be dated before."""
    limit = format_at(datetime.now(timezone.utc) + MAX_CLOCK_SKEW)
    return conn.execute(select(func.max(ledger_table.c.at)).where(ledger_table.c.at <= limit)).scalar()


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise InputError(f"unknown ledger action {action!r}; use one of: {', '.join(ACTIONS)}")


def normalised_fields(model: str, version: str, action: str, actor: str, reason: str, evidence_digest: str,
                      extra: dict | None, at: datetime | str | None) -> dict[str, Any]:
    """The row's columns (minus seq and hashes), checked and normalised (extra round-tripped through JSON): what a
    signed statement is made of."""
    version = str(version) if isinstance(version, int) else version
    for name, value in (("model", model), ("version", version), ("actor", actor)):
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"ledger event needs a non-empty {name} (got {value!r})")
    _check_action(action)
    if not isinstance(reason, str):
        raise InputError(f"reason must be a string, got {type(reason).__name__}")
    if evidence_digest and not _SHA256_HEX.match(evidence_digest):
        raise InputError(
            f"evidence_digest {evidence_digest!r} is not a sha256 hex digest; compute it with evidence_digest(evidence)"
        )
    if extra is not None and not isinstance(extra, dict):
        raise InputError(f"extra must be a dict, got {type(extra).__name__}")
    when = format_at(at)
    latest = format_at(datetime.now(timezone.utc) + MAX_CLOCK_SKEW)
    if when > latest:
        raise InputError(f"ledger event time {when} is in the future (this clock allows up to {latest}); events are "
                         "recorded when they happen, never dated ahead")
    return {
        "at": when,
        "model": model,
        "version": version,
        "action": action,
        "actor": actor,
        "reason": reason,
        "evidence_digest": evidence_digest,
        "extra": json.loads(canonical_json(extra or {})),
    }


def _to_event(row: dict[str, Any]) -> LedgerEvent:
    """Never raises: an unreadable or non-object ``extra`` is kept as text for the reader to report."""
    try:
        extra = json.loads(row["extra"])
    except (TypeError, ValueError):
        extra = None
    if not isinstance(extra, dict):
        extra = {"_unreadable": str(row["extra"])[:200]}
    return LedgerEvent(**{**row, "at": str(row["at"]), "extra": extra})


def _row_problem(row: dict[str, Any], prev_seq: int, prev_hash: str) -> str:
    """What is wrong with one stored row given the previous good row ('' if nothing)."""
    seq = row["seq"]
    if seq != prev_seq + 1:
        if prev_seq == 0:
            return f"chain starts at seq={seq}, expected seq=1 (earlier rows removed?)"
        return f"seq jumps from {prev_seq} to {seq} (rows {prev_seq + 1}..{seq - 1} removed?)"
    if row["prev_hash"] != prev_hash:
        what = "the genesis hash" if prev_seq == 0 else f"hash of seq={prev_seq}"
        return f"prev_hash does not match {what} (row removed or reordered?)"
    try:
        fields = {**row, "extra": json.loads(row["extra"])}
        recomputed = row_hash(fields)
    except (TypeError, ValueError, InputError):
        return "extra is not valid JSON (edited?)"
    if recomputed != row["hash"]:
        return "stored hash does not match its contents (edited?)"
    return ""
