"""Recording a version's registration in the ledger: the ``registered`` event (its facts and initial approval
state) and one ``gate_failed`` event per failed gate; the ledger is written before the MLflow tags that mirror it."""

from __future__ import annotations

import logging
from datetime import datetime

from tasks.core.errors import InputError
from tasks.core.names import GATES, ApprovalStatus, GateOutcome, Tag
from tasks.governance import attestation, events as prefect_events, registry, trust
from tasks.governance.ledger import Ledger, LedgerEvent, LedgerTimeConflict, evidence_digest
from tasks.governance.ledger_view import FACT_TAGS, STATE_TAGS, decision_time, identity_of, ledger_tags, state_tags

log = logging.getLogger("adaptrail")


def record_registration(model: str, version: str | int, status: str, gates: dict[str, str], evidence: dict,
                        actor: str, *, now: datetime | None = None, initial_state: dict[str, str] | None = None,
                        request: dict[str, str] | None = None, signature: dict | None = None) -> list[LedgerEvent]:
    """Ledger events ``registered`` (+ ``gate_failed`` per failed gate) for a new version, signed by the pipeline's
    service key (the policy's ``service`` person is their actor; ``actor`` is the requester); idempotent per version.
    ``signature``: the adapter's model-signing bundle as :func:`attestation.sign_and_log` returns it, recorded in the
    ``registered`` event (made with the same service key).

    The register step calls it after creating the version with its fact tags only, passing the approval state
    (``initial_state``); the event records facts and state, then the tags are mirrored from the ledger, so hand
    edits of them are detected later. Returns the events written now.
    """
    for attempt in range(3):
        try:
            return _record(model, str(version), status, gates, evidence, actor, decision_time(now), initial_state,
                           request, signature)
        except LedgerTimeConflict:  # another writer appended a later time first: sign again, now
            if now is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _record(model: str, version: str, status: str, gates: dict[str, str], evidence: dict, actor: str, now: datetime,
            initial_state: dict[str, str] | None, request: dict[str, str] | None, signature: dict | None = None
            ) -> list[LedgerEvent]:
    if status not in (ApprovalStatus.PENDING, ApprovalStatus.REJECTED):
        raise InputError(f"a new version is registered as pending or rejected, not {status!r}")
    bad = {g: o for g, o in gates.items() if g not in GATES or o not in set(GateOutcome)}
    if bad:
        raise InputError(f"gates {bad} are not gate -> outcome; use gates {GATES} and outcomes "
                         f"{[str(o) for o in GateOutcome]}")
    c = registry.client()
    mv = registry.model_version(c, model, version)
    signer = trust.service_signer()
    if signature is not None and signature.get("key_id") != signer.key_id:
        raise InputError(f"the adapter's bundle was made with key {signature.get('key_id')}, not the service key "
                         f"{signer.key_id} that signs the registration; register the run again")
    with Ledger() as led:
        t = trust.read(led)
        existing = t.events(model=model, version=version)
        service = trust.person_of(t.policy, signer) if t.policy else actor
        written: list[LedgerEvent] = []

        def write(action: str, reason: str, extra: dict) -> None:  # each a compare-and-swap on the history so far
            d = trust.draft(t, model, version, action, service, reason, evidence_digest(evidence), extra, now)
            if t.policy is None:  # a ledger without a policy (before `adaptrail init`): recorded unsigned
                f = d.fields
                event = led.append(model, version, action, service, reason, f["evidence_digest"], f["extra"],
                                   f["at"], expect_last=d.expect_last)
            else:
                event = trust.commit(led, d, signer.sign(d.statement), t.policy)
            written.append(event)
            t.last_hash[(model, version)], t.stored_last[(model, version)] = event.hash, event.seq

        if not any(e.action == "registered" for e in existing):
            tags = registration_tags(mv.tags, status, gates, service, now, initial_state)
            write("registered", tags[Tag.APPROVAL_REASON],
                  {"tags": tags, "gates": dict(gates), "identity": identity_of(mv), "requested_by": actor}
                  | ({"request": dict(request)} if request else {})
                  | ({attestation.EXTRA: dict(signature)} if signature else {}))
        recorded = {e.extra.get("gate") for e in existing if e.action == "gate_failed"}
        for gate, outcome in gates.items():
            if outcome == GateOutcome.FAILED and gate not in recorded:
                write("gate_failed", f"gate {gate} failed", {"gate": gate})
        want = ledger_tags([*existing, *written])
    for key, value in want.items():
        if mv.tags.get(key) != value:
            c.set_model_version_tag(model, version, key, value)
    prefect_events.notify_all(written, existing)  # after the commit and the tags; never fails the registration
    return written


def registration_tags(tags: dict[str, str], status: str, gates: dict[str, str], actor: str, now: datetime,
                      initial_state: dict[str, str] | None = None) -> dict[str, str]:
    """What the ``registered`` event records: the version's facts and its initial approval state."""
    facts = {k: tags[k] for k in FACT_TAGS if k in tags} | {Tag.gate(g): str(o) for g, o in gates.items()}
    if initial_state is not None:
        if initial_state.get(Tag.APPROVAL_STATUS) != status:
            raise InputError(f"initial_state says {initial_state.get(Tag.APPROVAL_STATUS)!r}, status is {status!r}")
        state = {k: initial_state.get(k, "") for k in STATE_TAGS}
    elif tags.get(Tag.APPROVAL_STATUS) == status and tags.get(Tag.APPROVAL_AT):
        state = {k: tags.get(k, "") for k in STATE_TAGS}
    else:
        state = state_tags(status, actor, now, f"registered as {status}", tags.get(Tag.REVIEW_DUE, ""))
    return facts | state
