"""Recording a version's registration in the ledger: the ``registered`` event (its facts and initial approval
state) and one ``gate_failed`` event per failed gate; the ledger is written before the MLflow tags that mirror it."""

from __future__ import annotations

import logging
from datetime import datetime

from tasks.core.errors import InputError
from tasks.core.names import GATES, ApprovalStatus, GateOutcome, Tag
from tasks.governance import registry
from tasks.governance.ledger import Ledger, LedgerEvent, evidence_digest
from tasks.governance.ledger_view import FACT_TAGS, STATE_TAGS, decision_time, identity_of, ledger_tags, state_tags

log = logging.getLogger("adaptrail")


def record_registration(model: str, version: str | int, status: str, gates: dict[str, str], evidence: dict,
                        actor: str, *, now: datetime | None = None, initial_state: dict[str, str] | None = None
                        ) -> list[LedgerEvent]:
    """Ledger events ``registered`` (+ ``gate_failed`` per failed gate) for a new version; idempotent per version.

    The register step calls it after creating the version with its fact tags only, passing the approval state
    (``initial_state``); the event records facts and state, then the tags are mirrored from the ledger, so hand
    edits of them are detected later. Returns the events written now.
    """
    version, now = str(version), decision_time(now)
    if status not in (ApprovalStatus.PENDING, ApprovalStatus.REJECTED):
        raise InputError(f"a new version is registered as pending or rejected, not {status!r}")
    bad = {g: o for g, o in gates.items() if g not in GATES or o not in set(GateOutcome)}
    if bad:
        raise InputError(f"gates {bad} are not gate -> outcome; use gates {GATES} and outcomes "
                         f"{[str(o) for o in GateOutcome]}")
    c = registry.client()
    mv = registry.model_version(c, model, version)
    with Ledger() as led:
        existing = led.events(model=model, version=version)
        written: list[LedgerEvent] = []

        def last() -> int | None:  # each append is a compare-and-swap on what this call has seen
            seen = written or existing
            return seen[-1].seq if seen else None

        if not any(e.action == "registered" for e in existing):
            tags = registration_tags(mv.tags, status, gates, actor, now, initial_state)
            written.append(led.append(model, version, "registered", actor, tags[Tag.APPROVAL_REASON],
                                      evidence_digest(evidence),
                                      {"tags": tags, "gates": dict(gates), "identity": identity_of(mv)}, at=now,
                                      expect_last=last()))
        recorded = {e.extra.get("gate") for e in existing if e.action == "gate_failed"}
        for gate, outcome in gates.items():
            if outcome == GateOutcome.FAILED and gate not in recorded:
                written.append(led.append(model, version, "gate_failed", actor, f"gate {gate} failed",
                                          evidence_digest(evidence), {"gate": gate}, at=now, expect_last=last()))
        want = ledger_tags(led.events(model=model, version=version))
    for key, value in want.items():
        if mv.tags.get(key) != value:
            c.set_model_version_tag(model, version, key, value)
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
