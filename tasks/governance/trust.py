"""Which ledger events count: signed statements checked against the policy in force (DESIGN.md: trust model).

Every event is a statement — its row without seq and hashes: time, model, version, action, actor, reason, evidence
digest and ``extra`` (the tags it sets, the version's identity and facts, and ``after``: the hash of the version's
previous counted event, so a signature cannot be replayed onto another history) — signed with SSHSIG by the actor's
key (``extra["signature"]``). :func:`evaluate` walks the chain once and keeps an event only if

- its time does not go backwards;
- a ``policy`` event is signed by an admin of the policy in force (the first by an admin it names itself);
- any other event, once a policy is in force, is signed by a key of ``actor`` whose role may sign its action, not
  revoked at its time (by any policy, so a later one may revoke retroactively), with the right ``after``.

Events before the first policy (a ledger from before signing) count but are marked unsigned, and the audit reports
them until re-reviewed. Everything else that fails is not counted, and is a critical finding: someone wrote around
adaptrail.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks.core.canonical import canonical_json, json_sha256
from tasks.core.errors import InputError
from tasks.core.names import Tag
from tasks.governance import keys
from tasks.governance.keys import ENV_SERVICE_KEY, service_key_path, service_signer  # noqa: F401
from tasks.governance.ledger import GENESIS_HASH, Ledger, LedgerEvent, format_at, normalised_fields
from tasks.governance.policy import POLICY_MODEL, POLICY_VERSION, Policy, revoked_since

ENV_SIGNING_KEY = "ADAPTRAIL_SIGNING_KEY"


class SignatureRefused(InputError):
    """A statement's signature is missing, invalid, or by a key the policy does not allow; nothing was written."""


@dataclass
class Problem:
    seq: int
    model: str
    version: str
    action: str
    text: str


@dataclass
class Trust:
    """The ledger as it counts: ``counted`` events (seq order), ``unsigned`` seqs among them (before the first
    policy), ``problems`` of events that do not count, and the policy in force at the end."""

    counted: list[LedgerEvent] = field(default_factory=list)
    unsigned: set[int] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
    policy: Policy | None = None
    policy_event: LedgerEvent | None = None
    request_ids: set[str] = field(default_factory=set)  # signed run requests already used by a registration
    last_hash: dict[tuple[str, str], str] = field(default_factory=dict)  # version -> its last counted hash
    stored_last: dict[tuple[str, str], int] = field(default_factory=dict)  # version -> its last stored seq

    def events(self, model: str | None = None, version: str | None = None) -> list[LedgerEvent]:
        """Counted events of adapters (policy events excluded), optionally of one model / version."""
        return [e for e in self.counted if e.model != POLICY_MODEL and (model is None or e.model == model)
                and (version is None or e.version == str(version))]

    def policy_events(self) -> list[LedgerEvent]:
        return [e for e in self.counted if e.model == POLICY_MODEL]

    def require_policy(self) -> Policy:
        if self.policy is None:
            raise SignatureRefused("the ledger holds no policy yet, so nobody may decide: an admin runs `adaptrail "
                                   "init` (one laptop) or `adaptrail policy apply POLICY.yaml --key ADMIN_KEY`")
        return self.policy


def statement(fields: dict[str, Any]) -> bytes:
    """The exact bytes signed for an event: its row without seq, hashes and the signature itself."""
    content = {k: fields[k] for k in ("at", "model", "version", "action", "actor", "reason", "evidence_digest")}
    content["extra"] = {k: v for k, v in fields["extra"].items() if k != "signature"}
    return canonical_json({"adaptrail_statement": 1, **content}).encode("ascii")


def evaluate(events: list[LedgerEvent]) -> Trust:
    """Judge every stored event (seq order) against the policy in force at its place in the chain."""
    revocations = _revocations(events)
    t, latest_at = Trust(), ""
    for e in events:
        key = (e.model, e.version)
        t.stored_last[key] = e.seq
        problem = _problem(t, e, latest_at, revocations)
        latest_at = max(latest_at, e.at)
        if problem:
            t.problems.append(Problem(e.seq, e.model, e.version, e.action, problem))
            continue
        t.counted.append(e)
        t.last_hash[key] = e.hash
        if isinstance(e.extra.get("request"), dict):
            t.request_ids.add(str(json.loads(e.extra["request"]["statement"]).get("request_id")))
        if e.action == "policy":
            t.policy, t.policy_event = Policy.parse(e.extra["policy"], f"ledger seq {e.seq}"), e
        elif t.policy is None:
            t.unsigned.add(e.seq)
    return t


def read(led: Ledger) -> Trust:
    return evaluate(led.events())


def _problem(t: Trust, e: LedgerEvent, latest_at: str, revocations: dict[str, str]) -> str:
    if e.at < latest_at:
        return f"its time {e.at} is before an earlier event's {latest_at}: ledger times never go backwards"
    if e.action == "policy":
        return _policy_problem(t, e, revocations)
    if t.policy is None:
        return ""  # before signing: counted, marked unsigned
    return (_signature_problem(t.policy, e, t.last_hash.get((e.model, e.version), GENESIS_HASH), revocations)
            or _rule_problem(t, e) or _registration_request_problem(t, e))


def _registration_request_problem(t: Trust, e: LedgerEvent) -> str:
    """A registration that carries a signed run request: the request is valid, by the requester it names, and
    used once."""
    request = e.extra.get("request")
    if e.action != "registered" or request is None:
        return ""
    person, why = request_problem(t.policy, request)
    if why:
        return f"its run request {why}"
    requested = json.loads(request["statement"])
    if requested.get("request_id") in t.request_ids:
        return "its run request was already used by another registration (replayed)"
    if (e.extra.get("tags") or {}).get(Tag.REQUESTED_BY) != person:
        return f"it names a requester other than {person!r}, who signed the run request"
    return ""


def _rule_problem(t: Trust, e: LedgerEvent) -> str:
    """Rules a validly signed event must still keep (a signed row inserted around the decision code): nobody
    approves their own run, and nothing approves a revoked version."""
    if e.action not in ("approved", "reviewed", "overridden"):
        return ""
    own = t.events(e.model, e.version)
    registered = next((x for x in own if x.action == "registered"), None)
    requester = str((registered.extra.get("tags") or {}).get(Tag.REQUESTED_BY, "")) if registered else ""
    if requester and requester.strip().casefold() == e.actor.strip().casefold():
        return f"{e.actor!r} approves their own run (separation of duties)"
    if any(x.action == "revoked" for x in own):
        return "it approves a revoked version (revoked is final)"
    return ""


def _policy_problem(t: Trust, e: LedgerEvent, revocations: dict[str, str]) -> str:
    try:
        new = Policy.parse(e.extra.get("policy"), f"ledger seq {e.seq}")
    except InputError as err:
        return str(err)
    if e.extra.get("policy_digest") != json_sha256(e.extra.get("policy")):
        return "its policy_digest is not the digest of the policy it carries"
    judge = t.policy or new  # the first policy is signed by an admin it names itself
    return _signature_problem(judge, e, t.last_hash.get((POLICY_MODEL, POLICY_VERSION), GENESIS_HASH), revocations)


def _signature_problem(policy: Policy, e: LedgerEvent, after: str, revocations: dict[str, str]) -> str:
    signature = e.extra.get("signature")
    if not isinstance(signature, str) or not signature:
        return "it is not signed, although a policy is in force (written around adaptrail?)"
    try:
        public = keys.signature_key(signature)
    except (ValueError, TypeError):
        return "its signature is malformed"
    person, why = policy.key_problem(public, e.action, e.at)
    if why:
        return why
    revoked = revoked_since(revocations, public, e.at)
    if revoked:
        return f"it is signed with key {keys.key_id(public)}, revoked at {revoked}"
    if person != e.actor:
        return f"its actor is {e.actor!r} but it is signed with a key of {person!r}"
    if e.extra.get("after") != after:
        return "it does not follow the version's previous event (a signature replayed onto another history?)"
    bad = keys.signature_problem(public, statement(e.to_dict()), signature)
    return f"its signature does not verify: {bad}" if bad else ""


def _revocations(events: list[LedgerEvent]) -> dict[str, str]:
    """Every key revocation any policy event states (judged once more when that event is evaluated)."""
    out: dict[str, str] = {}
    for e in events:
        if e.action == "policy":
            try:
                for key, when in Policy.parse(e.extra.get("policy"), "policy").revocations().items():
                    out[key] = min(when, out.get(key, when))
            except InputError:
                continue
    return out


# --- writing signed events -------------------------------------------------------------------------------------


@dataclass
class Draft:
    """An event to be signed: its normalised fields (``extra["after"]`` included) and the CAS seq it appends after."""

    fields: dict[str, Any]
    expect_last: int | None

    @property
    def statement(self) -> bytes:
        return statement(self.fields)

    @property
    def statement_b64(self) -> str:
        """The statement as one base64 line: what ``adaptrail sign`` takes (safe to paste into any shell)."""
        return base64.b64encode(self.statement).decode("ascii")


def draft(t: Trust, model: str, version: str, action: str, actor: str, reason: str, evidence_digest: str,
          extra: dict[str, Any], at: datetime | str) -> Draft:
    version = str(version)
    fields = normalised_fields(model, version, action, actor, reason, evidence_digest,
                               {**extra, "after": t.last_hash.get((model, version), GENESIS_HASH)}, at)
    return Draft(fields, t.stored_last.get((model, version)))


def commit(led: Ledger, d: Draft, signature: str, policy: Policy) -> LedgerEvent:
    """Check ``signature`` against ``policy`` (by the actor's key, allowed for the action, not revoked, valid), then
    append the event (compare-and-swap on the version's last stored event)."""
    f = d.fields
    try:
        public = keys.signature_key(signature)
    except (ValueError, TypeError):
        raise SignatureRefused("the signature is malformed; paste the whole line `adaptrail sign` printed") from None
    person, why = policy.key_problem(public, f["action"], f["at"])
    if why:
        raise SignatureRefused(f"refused: {why}")
    if person != f["actor"]:
        raise SignatureRefused(f"refused: the statement names {f['actor']!r} but is signed with a key of {person!r}")
    bad = keys.signature_problem(public, d.statement, signature)
    if bad:
        raise SignatureRefused(f"refused: {bad}")
    return led.append(f["model"], f["version"], f["action"], f["actor"], f["reason"], f["evidence_digest"],
                      {**f["extra"], "signature": signature}, f["at"], expect_last=d.expect_last)


def person_of(policy: Policy, signer: keys.Signer) -> str:
    holder = policy.holder(signer.public)
    if holder is None:
        raise SignatureRefused(f"the key {signer.key_id} ({signer.source}) is not in the policy; an admin adds its "
                               "public key (`adaptrail policy add NAME --role approver --pubkey KEY.pub`)")
    return holder.person


# --- keys on this machine ----------------------------------------------------------------------------------------


def sign_request(signer: keys.Signer, config_digest: str) -> dict[str, str]:
    """A run request signed by the requester's key (``adaptrail run --key``): who asked for which config, once."""
    with Ledger() as led:
        person = person_of(read(led).require_policy(), signer)
    statement = canonical_json({"adaptrail_request": 1, "requested_by": person, "request_id": uuid.uuid4().hex,
                                "config_digest": config_digest, "at": format_at(None)})
    return {"statement": statement, "signature": signer.sign(statement.encode("ascii"))}


def request_problem(policy: Policy | None, request: Any) -> tuple[str, str]:
    """(the requester, '') when ``request`` is a valid signed run request under ``policy``, else ('', why not)."""
    try:
        statement, signature = str(request["statement"]), str(request["signature"])
        data = json.loads(statement)
        public = keys.signature_key(signature)
    except (KeyError, TypeError, ValueError):
        return "", "is malformed"
    holder = policy.holder(public) if policy is not None else None
    if holder is None:
        return "", f"is signed by key {keys.key_id(public)}, which is not in the policy"
    if holder.revoked_at and str(data.get("at", "")) >= holder.revoked_at:
        return "", f"is signed by key {keys.key_id(public)}, revoked at {holder.revoked_at}"
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
    if json.loads(request["statement"]).get("request_id") in t.request_ids:
        raise InputError("the run request was already used by a registration; each run is requested anew")
    if json.loads(request["statement"]).get("config_digest") != config_digest:
        raise InputError("the run request was signed for another config; sign the request for this one")
    return person


def require_service_key() -> None:
    """Refuse (bad input) when a policy is in force and the pipeline's key may not sign registrations under it."""
    signer = service_signer()
    with Ledger() as led:
        policy = read(led).policy
    if policy is None:
        return
    _, why = policy.key_problem(signer.public, "registered", format_at(None))
    if why:
        raise InputError(f"the pipeline could not sign this run's registration: {why}. An admin adds it: `adaptrail "
                         f"policy add pipeline --role service --pubkey {signer.source}.pub --key ADMIN_KEY` (or point "
                         f"{ENV_SERVICE_KEY} at the service key the policy names)")


def user_signer(path: str | None) -> keys.Signer:
    """The decider's key: ``--key``, else ``ADAPTRAIL_SIGNING_KEY``."""
    chosen = path or os.environ.get(ENV_SIGNING_KEY)
    if not chosen:
        raise InputError(f"a decision is signed with your own key: pass --key ~/.ssh/id_ed25519 (or set "
                         f"{ENV_SIGNING_KEY}); `adaptrail keygen NAME` creates one")
    return keys.load_signer(chosen)
