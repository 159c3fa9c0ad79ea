"""Test-only builders of data the tests need (the shipped generators live in tasks/data/example.py)."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.errors import InputError


def skew_group_labels(df: pd.DataFrame, group: str, to_label: str, fraction: float, seed: int = 0, *,
                      label_column: str = "team", group_column: str = "region") -> pd.DataFrame:
    """A copy where ``fraction`` of ``group``'s rows not already labelled ``to_label`` are relabelled to it.

    Makes a deliberately biased training set (one group's tickets pushed to one team) for the bias gate.
    Which rows change is fixed by ``seed``; ``round(fraction * candidates)`` rows change.
    """
    for col in (label_column, group_column):
        if col not in df.columns:
            raise InputError(f"column {col!r} is not in the data (columns are {list(df.columns)}); pass "
                             "label_column= / group_column= to match")
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be between 0 and 1 (got {fraction}); e.g. 0.5 relabels half the rows")
    if not (df[group_column] == group).any():
        values = sorted(str(v) for v in pd.unique(df[group_column]))
        raise InputError(f"group {group!r} has no rows in column {group_column!r}; choose one of {values}")
    if not isinstance(to_label, str) or not to_label:
        raise InputError(f"to_label must be a non-empty label string (got {to_label!r})")
    out = df.copy()
    candidates = [i for i, (g, y) in enumerate(zip(out[group_column], out[label_column]))
                  if g == group and y != to_label]
    chosen = sorted(random.Random(seed).sample(candidates, round(fraction * len(candidates))))
    out.iloc[chosen, out.columns.get_loc(label_column)] = to_label
    return out


def tamper_sqlite(db_path, sql: str, *params) -> None:
    """Run ``sql`` on a SQLite ledger as someone with write access to its file would: first dropping the
    append-only triggers (anyone who can write the file can), so what is tested is that the chain still tells."""
    import sqlite3

    con = sqlite3.connect(db_path)
    try:
        with con:
            for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                con.execute(f'DROP TRIGGER "{name}"')
            con.execute(sql, params)
    finally:
        con.close()


#: The people of the test policy: an admin, the pipeline's service key, and approvers (erin holds a key, no role).
APPROVERS = ("alice", "bob", "carol", "dave", "reviewer")
POLICY_AT = datetime(2020, 1, 1, tzinfo=timezone.utc)  # before every time the tests decide at


def setup_people(home: Path, approvers: tuple[str, ...] = APPROVERS, review_period_days: int = 182,
                 at: datetime = POLICY_AT) -> dict[str, Any]:
    """Keys under ``home/keys`` (the service key where the pipeline looks for it) and a policy naming them, applied
    to the ledger by the admin as of ``at``; returns name -> Signer (``admin``, ``pipeline``, approvers, ``erin``)."""
    from tasks.governance import keys, policy_admin
    from tasks.governance.policy import Policy

    def key(name: str) -> keys.Signer:  # the service key may exist already: the pipeline made it on first use
        path = home / "keys" / ("service" if name == "pipeline" else name)
        kind = keys.SERVICE_KEY_KIND if name == "pipeline" else "ed25519"  # P-256: it signs model-signing bundles
        return keys.load_signer(path) if path.is_file() else keys.keygen(path, name, kind)

    signers = {name: key(name) for name in ("admin", "pipeline", *approvers, "erin")}
    people = {"admin": {"roles": ["admin"], "keys": [keys.public_line(signers["admin"].public)]},
              "pipeline": {"roles": ["service"], "keys": [keys.public_line(signers["pipeline"].public)]}}
    people |= {n: {"roles": ["approver"], "keys": [keys.public_line(signers[n].public)]} for n in approvers}
    people["erin"] = {"roles": [], "keys": [keys.public_line(signers["erin"].public)]}
    policy = Policy.parse({"review_period_days": review_period_days, "people": people}, "test policy")
    policy_admin.apply(policy, signers["admin"], "test policy", now=at)
    return signers


def people_now() -> dict[str, Any]:
    """The test people for a state directory a flow has already written to (its first events are unsigned, before
    the policy): the policy is applied now, once; later calls load the same keys."""
    from tasks.core.state import home
    from tasks.governance import keys, policy_admin

    root = home()
    if policy_admin.current() is None:
        return setup_people(root, at=datetime.now(timezone.utc))
    return {p.name if p.name != "service" else "pipeline": keys.load_signer(p)
            for p in (root / "keys").iterdir() if not p.name.endswith(".pub")}
