"""Checkpoints of the ledger's head kept outside its database, so removing its last rows or rewriting it shows.

Every append writes ``(ledger, seq, head hash)`` to a checkpoint file (``ADAPTRAIL_CHECKPOINTS``, default
``$ADAPTRAIL_HOME/checkpoints.jsonl``; in a team, a file on write-once storage), and every audit run in MLflow records
the head it saw. An audit checks that each earlier checkpoint's head is still in the chain at its seq. A ledger is
named by the hash of its first row, so one file can serve several ledgers (tests, a staging and a production one).
A ledger with events but no checkpoint in the store is itself a finding: a store that was removed, emptied or
replaced must not pass for a first audit. Each line is signed by the pipeline's service key where this process has
it; a line whose signature is not by a key of the policy is reported (a forged line) and not compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.canonical import canonical_json
from tasks.core.state import home
from tasks.governance import keys

ENV_CHECKPOINTS = "ADAPTRAIL_CHECKPOINTS"


@dataclass(frozen=True)
class Checkpoint:
    ledger: str  # hash of the ledger's first row
    seq: int
    head_hash: str
    at: str
    by: str  # what wrote it: "append" or "audit" (or where it was read from)
    signature: str = ""  # SSHSIG of the other fields' canonical JSON ("" for unsigned or MLflow-held ones)

    @property
    def statement(self) -> bytes:
        return canonical_json({"ledger": self.ledger, "seq": self.seq, "head_hash": self.head_hash, "at": self.at,
                               "by": self.by}).encode("ascii")


def store_path() -> Path:
    return Path(os.environ.get(ENV_CHECKPOINTS) or home() / "checkpoints.jsonl").expanduser()


def record(ledger: str, seq: int, head_hash: str, at: str, by: str) -> None:
    """Append one checkpoint line and flush it to disk (O_APPEND: concurrent writers do not interleave lines)."""
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    cp = Checkpoint(ledger, seq, head_hash, at, by)
    signer = keys.service_signer(create=False)
    signature = signer.sign(cp.statement) if signer is not None else ""
    line = json.dumps({**json.loads(cp.statement), "signature": signature}, sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read(ledger: str) -> list[Checkpoint] | None:
    """This ledger's checkpoints in the store; None when the store does not exist."""
    path = store_path()
    if not path.is_file():
        return None
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
            if data.get("ledger") == ledger:
                out.append(Checkpoint(data["ledger"], int(data["seq"]), str(data["head_hash"]), str(data["at"]),
                                      str(data["by"]), str(data.get("signature") or "")))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged line is not a checkpoint; the others still count
    return out


def problems(hashes: dict[int, str], stored: list[Checkpoint] | None, elsewhere: list[Checkpoint] = (),
             known_key: Callable[[Any], bool] | None = None) -> tuple[list[str], list[str]]:
    """(critical, high) problems of a chain (seq -> hash, as stored now) against the store's checkpoints and those
    kept elsewhere (earlier audits): a head no longer in the chain is critical; a non-empty ledger without any
    checkpoint in the store is high; a signed line not signed by a ``known_key`` (the policy's) is high, not used."""
    critical, high = [], []
    if known_key is not None and stored:
        forged = [cp for cp in stored if cp.signature and _signature_problem(cp, known_key)]
        high += [f"the checkpoint line for seq {cp.seq} written at {cp.at} ({cp.by}) "
                 f"{_signature_problem(cp, known_key)}: a forged line, not used" for cp in forged]
        stored = [cp for cp in stored if cp not in forged]
    if hashes and not stored:
        high.append(f"the checkpoint store {store_path()} is missing, or holds no checkpoint of this ledger, although "
                    f"the ledger has {len(hashes)} events: the store was removed, emptied or replaced (or the ledger "
                    "predates checkpoints), so removal of the ledger's last events cannot be ruled out")
    length = max(hashes, default=0)
    for cp in sorted([*(stored or []), *elsewhere], key=lambda c: c.seq):
        if cp.seq > length:
            critical.append(f"the ledger ends at seq {length}, but a checkpoint written at {cp.at} ({cp.by}) saw "
                            f"seq {cp.seq}: events were removed from its end")
            break
        if hashes.get(cp.seq) != cp.head_hash:
            critical.append(f"the ledger's event at seq {cp.seq} is not the one a checkpoint written at {cp.at} "
                            f"({cp.by}) saw: the ledger was rewritten from there")
            break
    return critical, high


def _signature_problem(cp: Checkpoint, known_key: Callable[[Any], bool]) -> str:
    try:
        public = keys.signature_key(cp.signature)
    except (ValueError, TypeError):
        return "has a malformed signature"
    if not known_key(public):
        return f"is signed by key {keys.key_id(public)}, which is not a service key of the policy"
    bad = keys.signature_problem(public, cp.statement, cp.signature)
    return f"has a signature that does not verify ({bad})" if bad else ""
