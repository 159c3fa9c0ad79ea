"""Signed run requests: who asked for a run (``adaptrail run --key``), for which config, once.

The request travels with the run and is recorded in its ``registered`` event; the requester is then the signer's
person in the policy, not the ``ADAPTRAIL_USER`` claim, so separation of duties compares keys on both sides.
"""

from __future__ import annotations

import json
import uuid

from tasks.core.canonical import canonical_json
from tasks.core.errors import InputError
from tasks.governance import keys
from tasks.governance.ledger import Ledger, format_at
from tasks.governance.event_rules import request_id, request_problem
from tasks.governance.trust import person_of, read


def sign_request(signer: keys.Signer, config_digest: str) -> dict[str, str]:
    """A run request signed by the requester's key (``adaptrail run --key``): who asked for which config, once."""
    with Ledger() as led:
        person = person_of(read(led).require_policy(), signer)
    statement = canonical_json({"adaptrail_request": 1, "requested_by": person, "request_id": uuid.uuid4().hex,
                                "config_digest": config_digest, "at": format_at(None)})
    return {"statement": statement, "signature": signer.sign(statement.encode("ascii"))}


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
