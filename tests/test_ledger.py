"""The approval ledger: round-trip, tamper detection, validation, and concurrent writers from several processes."""

from __future__ import annotations

import multiprocessing as mp
from datetime import datetime, timedelta, timezone

import pytest

from tests.builders import tamper_sqlite
from sqlalchemy import Engine, event

from tasks.core.errors import InputError
from tasks.governance.ledger import ACTIONS, GENESIS_HASH, Ledger, evidence_digest, ledger_url

WRITERS, APPENDS_EACH = 4, 25


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state" / "ledger.db"


@pytest.fixture
def ledger(db_path):
    with Ledger(f"sqlite:///{db_path}") as led:
        yield led


def fill(ledger: Ledger, n: int = 6) -> None:
    for i in range(n):
        ledger.append("router", str(i % 2 + 1), ACTIONS[i % len(ACTIONS)], f"user{i}", reason=f"r{i}")


def raw_sql(db_path, sql: str, *params) -> None:
    """The insider's edit, past the append-only triggers (see tests/builders.tamper_sqlite)."""
    tamper_sqlite(db_path, sql, *params)


def test_append_and_read_back_in_seq_order(ledger):
    digest = evidence_digest({"gate": "bias", "passed": True})
    first = ledger.append("router", "1", "registered", "alice", reason="trained", extra={"flow_run_id": "abc"})
    second = ledger.append("router", "1", "approved", "bob", reason="looks good", evidence_digest=digest)

    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    assert first.at.endswith("Z") and "." in first.at
    assert ledger.events() == [first, second]
    assert ledger.events()[0].extra == {"flow_run_id": "abc"}
    assert ledger.head() == second
    assert ledger.latest("router", "1") == second
    assert ledger.latest("router", "1", actions=["registered"]) == first
    assert ledger.latest("router", "2") is None


def test_empty_ledger_verifies_with_genesis_head(ledger):
    assert ledger.head() is None
    report = ledger.verify()
    assert (report.ok, report.length, report.head_hash) == (True, 0, GENESIS_HASH)


def test_good_chain_verifies(ledger):
    fill(ledger)
    report = ledger.verify()
    assert report.ok and report.first_broken_seq is None and report.problem == ""
    assert (report.length, report.head_hash) == (6, ledger.head().hash)
    assert ledger.verified_events() == (report, ledger.events())


def test_ledger_reopened_continues_the_same_chain(ledger, db_path):
    fill(ledger, 3)
    with Ledger(f"sqlite:///{db_path}") as again:
        event_ = again.append("router", "1", "reviewed", "carol")
    assert event_.seq == 4 and ledger.verify().ok


@pytest.mark.parametrize(
    ("sql", "params", "broken", "words"),
    [
        ("UPDATE approval_ledger SET reason = ? WHERE seq = 3", ("forged",), 3, "stored hash does not match"),
        ("UPDATE approval_ledger SET actor = ? WHERE seq = 5", ("mallory",), 5, "stored hash does not match"),
        ("UPDATE approval_ledger SET extra = ? WHERE seq = 2", ('{"x":1}',), 2, "stored hash does not match"),
        ("DELETE FROM approval_ledger WHERE seq = 4", (), 5, "seq jumps from 3 to 5"),
        ("DELETE FROM approval_ledger WHERE seq = 1", (), 2, "expected seq=1"),
    ],
    ids=["edit-reason", "edit-actor", "edit-extra", "delete-middle", "delete-first"],
)
def test_tampering_names_the_first_broken_row(ledger, db_path, sql, params, broken, words):
    fill(ledger)
    raw_sql(db_path, sql, *params)
    report = ledger.verify()
    assert not report.ok
    assert report.first_broken_seq == broken
    assert report.problem.startswith(f"row seq={broken}:") and words in report.problem
    # the one-scan read (verify, audit) reports the same break and still returns every event, past it too
    same, events = ledger.verified_events()
    assert same == report and [e.to_dict() for e in events] == [e.to_dict() for e in ledger.events()]


def test_removed_and_renumbered_row_breaks_the_link(ledger, db_path):
    fill(ledger)
    raw_sql(db_path, "DELETE FROM approval_ledger WHERE seq = 4")
    for seq in (5, 6):
        raw_sql(db_path, "UPDATE approval_ledger SET seq = ? WHERE seq = ?", seq - 1, seq)
    report = ledger.verify()
    assert not report.ok and report.first_broken_seq == 4
    assert "prev_hash does not match hash of seq=3" in report.problem


def test_edit_with_recomputed_hash_still_breaks_the_next_link(ledger, db_path):
    """A forger who fixes up the edited row's hash must rewrite every later row too."""
    from tasks.governance.ledger import row_hash

    fill(ledger)
    row = ledger.events()[2].to_dict() | {"reason": "forged"}
    raw_sql(db_path, "UPDATE approval_ledger SET reason = ?, hash = ? WHERE seq = 3", "forged", row_hash(row))
    report = ledger.verify()
    assert report.first_broken_seq == 4 and "prev_hash does not match hash of seq=3" in report.problem


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"action": "promoted"}, "unknown ledger action 'promoted'"),
        ({"model": ""}, "non-empty model"),
        ({"version": " "}, "non-empty version"),
        ({"actor": ""}, "non-empty actor"),
        ({"evidence_digest": "abc"}, "not a sha256 hex digest"),
        ({"extra": {"when": datetime.now()}}, "not plain JSON"),
        ({"at": "2025-01-01T00:00:00"}, "no timezone"),
    ],
)
def test_invalid_input_is_refused_and_nothing_written(ledger, kwargs, words):
    args = {"model": "router", "version": "1", "action": "approved", "actor": "bob"} | kwargs
    with pytest.raises(InputError, match=words):
        ledger.append(**args)
    assert ledger.head() is None


def test_latest_refuses_unknown_action(ledger):
    with pytest.raises(InputError, match="unknown ledger action"):
        ledger.latest("router", "1", actions=["aproved"])


def test_evidence_digest_is_stable_under_key_order():
    a = evidence_digest({"gate": "bias", "metrics": {"f1": 0.9, "dp": 0.1}, "groups": ["a", "b"]})
    b = evidence_digest({"groups": ["a", "b"], "metrics": {"dp": 0.1, "f1": 0.9}, "gate": "bias"})
    assert a == b and len(a) == 64
    assert evidence_digest({"gate": "bias", "metrics": {"f1": 0.91}}) != evidence_digest(
        {"gate": "bias", "metrics": {"f1": 0.9}}
    )


def test_filters_by_model_version_and_time(ledger):
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    for i, (model, version) in enumerate([("router", "1"), ("router", "2"), ("tagger", "1"), ("router", "1")]):
        ledger.append(model, version, "registered", "alice", at=t0 + timedelta(days=i))

    assert [e.seq for e in ledger.events(model="router")] == [1, 2, 4]
    assert [e.seq for e in ledger.events(model="router", version="1")] == [1, 4]
    assert [e.seq for e in ledger.events(since=t0 + timedelta(days=1))] == [2, 3, 4]
    assert [e.seq for e in ledger.events(until="2025-03-03T12:00:00Z")] == [1, 2]  # until is exclusive
    # Times given in another zone are compared in UTC.
    assert [e.seq for e in ledger.events(since="2025-03-02T13:00:00+01:00", until=t0 + timedelta(days=2, hours=1))] == [
        2,
        3,
    ]


def test_appends_are_serialised_with_begin_immediate(ledger):
    """The head read and the insert share one write-locked transaction, so writers cannot fork the chain."""
    seen: list[str] = []

    def record(conn, cursor, statement, *rest):
        seen.append(statement.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in statement else ""))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        ledger.append("router", "1", "registered", "alice")
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "INSERT" and set(seen[1:-1]) == {"SELECT"}  # reads, locked


def test_ledger_url_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("ADAPTRAIL_LEDGER_URL", raising=False)
    monkeypatch.setenv("ADAPTRAIL_HOME", str(tmp_path))
    assert ledger_url() == f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("ADAPTRAIL_LEDGER_URL", "postgresql+psycopg://db/adaptrail")
    assert ledger_url() == "postgresql+psycopg://db/adaptrail"


def _writer(url: str, worker: int, barrier) -> None:
    with Ledger(url) as led:
        barrier.wait()
        for i in range(APPENDS_EACH):
            led.append("router", str(worker), "reviewed", f"worker{worker}", reason=f"append {i}")


def test_concurrent_writer_processes_leave_one_complete_chain(db_path):
    url = f"sqlite:///{db_path}"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(url, w, barrier)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS

    with Ledger(url) as led:
        events = led.events()
        report = led.verify()
    total = WRITERS * APPENDS_EACH
    assert report.ok, report.problem
    assert report.length == total
    assert [e.seq for e in events] == list(range(1, total + 1))
    for w in range(WRITERS):
        mine = [e.reason for e in events if e.version == str(w)]
        assert mine == [f"append {i}" for i in range(APPENDS_EACH)]  # each writer's order is kept


def test_compare_and_swap_refuses_an_append_against_a_stale_view(ledger):
    from tasks.governance.ledger import LedgerConflict

    first = ledger.append("router", "1", "registered", "carol", expect_last=None)
    with pytest.raises(LedgerConflict):
        ledger.append("router", "1", "registered", "carol", expect_last=None)  # someone registered it already
    ledger.append("router", "1", "approved", "alice", expect_last=first.seq)
    with pytest.raises(LedgerConflict):
        ledger.append("router", "1", "revoked", "bob", expect_last=first.seq)
    assert [e.action for e in ledger.events()] == ["registered", "approved"]


def test_an_event_dated_in_the_future_is_refused(ledger):
    with pytest.raises(InputError, match="in the future"):
        ledger.append("router", "1", "expired", "adaptrail/expiry", at=datetime.now(timezone.utc) + timedelta(days=1))
    assert ledger.events() == []
