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
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks.core.canonical import canonical_json, json_sha256
from tasks.core.errors import InputError, Refused
from tasks.core.names import Tag
from tasks.governance import keys
from tasks.governance.keys import ENV_SERVICE_KEY, service_key_path, service_signer  # noqa: F401
from tasks.governance.ledger import GENESIS_HASH, Ledger, LedgerEvent, format_at, normalised_fields
from tasks.governance.event_rules import request_id, request_problem, rule_problem, shape_problem
from tasks.governance.policy import POLICY_MODEL, Policy, revoked_since

ENV_SIGNING_KEY = "ADAPTRAIL_SIGNING_KEY"


class SignatureRefused(Refused):
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
    by_version: dict[tuple[str, str], list[LedgerEvent]] = field(default_factory=dict)  # counted, per version

    def events(self, model: str | None = None, version: str | None = None) -> list[LedgerEvent]:
        """Counted events of adapters (policy events excluded), optionally of one model / version."""
        if model is not None and version is not None:
            return list(self.by_version.get((model, str(version)), []))
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
    policies, revocations = _policy_chain(events)
    t, latest_at = Trust(), ""
    for e in events:
        key = (e.model, e.version)
        t.stored_last[key] = e.seq
        problem = shape_problem(e) or _time_problem(e, latest_at) or (
            policies[e.seq][1] if e.action == "policy" else _problem(t, e, revocations))
        if problem:
            t.problems.append(Problem(e.seq, e.model, e.version, e.action, problem))
            continue
        latest_at = e.at  # only counted events set the clock: a forged future row cannot stop every write
        t.counted.append(e)
        if e.model != POLICY_MODEL:
            t.by_version.setdefault(key, []).append(e)
        t.last_hash[key] = e.hash
        if e.action == "registered" and "request" in e.extra:
            t.request_ids.add(request_id(e.extra["request"]))
        if e.action == "policy":
            t.policy, t.policy_event = policies[e.seq][0], e
        elif t.policy is None:
            t.unsigned.add(e.seq)
    return t


def read(led: Ledger) -> Trust:
    return evaluate(led.events())


def _time_problem(e: LedgerEvent, latest_at: str) -> str:
    if e.at < latest_at:
        return f"its time {e.at} is before an earlier event's {latest_at}: ledger times never go backwards"
    return ""


def _problem(t: Trust, e: LedgerEvent, revocations: dict[str, str]) -> str:
    if t.policy is None:
        return ""  # before signing: counted, marked unsigned
    own = t.by_version.get((e.model, e.version), [])
    return (_signature_problem(t.policy, e, t.last_hash.get((e.model, e.version), GENESIS_HASH), revocations)
            or rule_problem(own, e, t.policy) or _registration_request_problem(t, e, revocations))


def _registration_request_problem(t: Trust, e: LedgerEvent, revocations: dict[str, str]) -> str:
    """A registration that carries a signed run request: the request is valid, by the requester it names, and
    used once."""
    request = e.extra.get("request")
    if e.action != "registered" or request is None:
        return ""
    person, why = request_problem(t.policy, request, revocations)
    if why:
        return f"its run request {why}"
    if request_id(request) in t.request_ids:
        return "its run request was already used by another registration (replayed)"
    if (e.extra.get("tags") or {}).get(Tag.REQUESTED_BY) != person:
        return f"it names a requester other than {person!r}, who signed the run request"
    return ""


def _policy_chain(events: list[LedgerEvent]) -> tuple[dict[int, tuple[Policy | None, str]], dict[str, str]]:
    """Judge the policy events on their own first: seq -> (the policy, '') or (None, why it does not count), and
    the key revocations of the counted ones (applied to every event). Only the ledger's first policy event may be
    signed by an admin it names itself; every later one needs an admin of the policy in force."""
    out: dict[int, tuple[Policy | None, str]] = {}
    current: Policy | None = None
    after, latest, first = GENESIS_HASH, "", True
    revocations: dict[str, str] = {}
    for e in (x for x in events if x.action == "policy"):
        why = shape_problem(e) or _time_problem(e, latest)
        new = None
        if not why:
            try:
                new = Policy.parse(e.extra.get("policy"), f"ledger seq {e.seq}")
            except InputError as err:
                why = str(err)
        if not why and e.extra.get("policy_digest") != json_sha256(e.extra.get("policy")):
            why = "its policy_digest is not the digest of the policy it carries"
        if not why and current is None and not first:
            why = "the ledger's first policy event did not count, so no later one can name its own admin"
        judge = current or new
        if not why and judge is not None:
            why = _signature_problem(judge, e, after, revocations)
        first = False
        out[e.seq] = (None if why else new, why)
        if not why and new is not None:
            current, after, latest = new, e.hash, e.at
            for k, when in new.revocations().items():
                revocations[k] = min(when, revocations.get(k, when))
    return out, revocations


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
    bad = keys.signature_problem(public, statement(vars(e)), signature)  # the event's fields, not a deep copy
    return f"its signature does not verify: {bad}" if bad else ""


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


def require_service_key() -> None:
    """Refuse (bad input) when the pipeline's key cannot sign the adapter's model-signing bundle (not ECDSA P-256:
    an older state directory's ed25519 key), or a policy is in force and the key may not sign registrations."""
    signer = service_signer()
    with Ledger() as led:
        policy = read(led).policy
    _, why = policy.key_problem(signer.public, "registered", format_at(None)) if policy else ("", "")
    if why:
        raise InputError(f"the pipeline could not sign this run's registration: {why}. An admin adds it: `adaptrail "
                         f"policy add pipeline --role service --pubkey {signer.source}.pub --key ADMIN_KEY` (or point "
                         f"{ENV_SERVICE_KEY} at the service key the policy names)")
    if keys.service_key_problem(signer):  # never a registration without its model-signing bundle
        raise InputError(keys.service_key_problem(signer))


def user_signer(path: str | None) -> keys.Signer:
    """The decider's key: ``--key``, else ``ADAPTRAIL_SIGNING_KEY``."""
    chosen = path or os.environ.get(ENV_SIGNING_KEY)
    if not chosen:
        raise InputError(f"a decision is signed with your own key: pass --key ~/.ssh/id_ed25519 (or set "
                         f"{ENV_SIGNING_KEY}); `adaptrail keygen NAME` creates one")
    return keys.load_signer(chosen)
