"""Signed run requests: who asked for a run (``adaptrail run --key``), for which config, once.

The request travels with the run and is recorded in its ``registered`` event; the requester is then the signer's
person in the policy, not the ``ADAPTRAIL_USER`` claim, so separation of duties compares keys on both sides.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tasks.core.canonical import canonical_json
from tasks.core.errors import InputError
from tasks.governance import keys
from tasks.governance.ledger import Ledger, format_at
from tasks.governance.policy import Policy, revoked_since
from tasks.governance.trust import person_of, read, request_id


def sign_request(signer: keys.Signer, config_digest: str) -> dict[str, str]:
    """A run request signed by the requester's key (``adaptrail run --key``): who asked for which config, once."""
    with Ledger() as led:
        person = person_of(read(led).require_policy(), signer)
    statement = canonical_json({"adaptrail_request": 1, "requested_by": person, "request_id": uuid.uuid4().hex,
                                "config_digest": config_digest, "at": format_at(None)})
    return {"statement": statement, "signature": signer.sign(statement.encode("ascii"))}


def request_problem(policy: Policy | None, request: Any, revocations: dict[str, str] | None = None
                    ) -> tuple[str, str]:
    """(the requester, '') when ``request`` is a valid signed run request under ``policy`` (and no key revocation
    stated since), else ('', why not)."""
    try:
        statement, signature = str(request["statement"]), str(request["signature"])
        data = json.loads(statement)
        public = keys.signature_key(signature)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (KeyError, TypeError, ValueError):
        return "", "is malformed"
    holder = policy.holder(public) if policy is not None else None
    if holder is None:
        return "", f"is signed by key {keys.key_id(public)}, which is not in the policy"
    revoked = revoked_since(revocations or {}, public, str(data.get("at", ""))) or (
        holder.revoked_at if holder.revoked_at and str(data.get("at", "")) >= holder.revoked_at else None)
    if revoked:
        return "", f"is signed by key {keys.key_id(public)}, revoked at {revoked}"
    if data.get("requested_by") != holder.person:
        return "", f"names {data.get('requested_by')!r} but is signed by a key of {holder.person!r}"
    bad = keys.signature_problem(public, statement.encode("ascii"), signature)
    return (holder.person, "") if not bad else ("", f"does not verify: {bad}")


def check_request(request: dict[str, str] | None, config_digest: str, claimed: str) -> str:
    """The requester of a run: the signer of ``request`` (checked now: valid, for this config) or, unsigned, the
    ``claimed`` name (ADAPTRAIL_USER), which the policy can refuse to accept for approval."""
    if request is None:
        return claimed
    with Ledger() as led:
        t = read(led)
    person, why = request_problem(t.policy, request)
    if why:
        raise InputError(f"the run request {why}; sign it with your own key (`adaptrail run --key KEY`)")
    if request_id(request) in t.request_ids:
        raise InputError("the run request was already used by a registration; each run is requested anew")
    if json.loads(request["statement"]).get("config_digest") != config_digest:
        raise InputError("the run request was signed for another config; sign the request for this one")
    return person
