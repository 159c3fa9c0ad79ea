"""One version as a decision sees it (:class:`Subject`), what a decision did (:class:`Decision`), what it will do once
signed (:class:`Plan`), and the repair of MLflow tags and aliases from the ledger (:func:`reconcile_version`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlflow.tracking import MlflowClient

from tasks.core import state
from tasks.core.names import ALIAS_CHAMPION, Tag
from tasks.governance import registry, trust
from tasks.governance.ledger import Ledger, LedgerEvent, evidence_digest
from tasks.governance.ledger_view import (FACT_TAGS, LEDGER_ONLY_TAGS, STATUS_OF, disagreements, expected_champion,
                                          identity_of, identity_problem, ledger_tags)
from tasks.governance.event_rules import rule_problem
from tasks.governance.policy import Policy
from tasks.governance.rules import DecisionRefused

log = logging.getLogger("adaptrail")


@dataclass
class Decision:
    """What a decision did. ``seq`` is None and ``changed`` False when it was already in effect."""

    model: str
    version: str
    action: str
    status: str
    actor: str
    reason: str
    at: str
    seq: int | None
    changed: bool
    champion: str | None
    successor: str | None = None
    repaired: list[str] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Plan:
    """A decision whose rules passed: the statement to sign (``draft``) and what follows once it is recorded."""

    kind: str  # approve | reject | revoke | review | expire
    draft: trust.Draft
    subject: Subject
    first_override: bool = False

    @property
    def statement(self) -> bytes:
        return self.draft.statement


@dataclass
class Subject:
    """One version as a decision sees it: the ledger's counted record (``events``, and ``champion`` as the ledger
    implies it). Its tags are repaired from the ledger first; the champion alias only once a decision is accepted
    (:meth:`repair`), so a refused decision never moves it."""

    c: MlflowClient
    led: Ledger
    trust: trust.Trust
    model: str
    version: str
    events: list[LedgerEvent]
    champion: str | None
    repaired: list[str]
    now: datetime

    @property
    def view(self) -> dict[str, str]:
        return ledger_tags(self.events)

    @property
    def status(self) -> str:
        return self.view.get(Tag.APPROVAL_STATUS, "")

    @property
    def policy(self) -> Policy:
        return self.trust.require_policy()

    @property
    def last_decision(self) -> str | None:
        """The action of the last event that set the approval status."""
        setters = [e for e in self.events if Tag.APPROVAL_STATUS in (e.extra.get("tags") or {}) or
                   ("tags" not in e.extra and e.action in STATUS_OF)]
        return setters[-1].action if setters else None

    def plan(self, kind: str, action: str, person: str, reason: str, tags: dict[str, str], **extra: Any) -> Plan:
        """The statement of this decision: the tags it sets, what it decides about (the version's identity and
        digests, which the signer sees), the state before it."""
        facts = {k: v for k, v in self.view.items() if k in FACT_TAGS}
        registered = next(e for e in self.events if e.action == "registered")
        subject = {**(registered.extra.get("identity") or {}), "adapter_digest": facts.get(Tag.ADAPTER_DIGEST, ""),
                   "base_model_digest": facts.get(Tag.BASE_MODEL_DIGEST, "")}
        bundle = registered.extra.get("adapter_signature")  # the model-signing bundle's digest (attestation.py)
        if isinstance(bundle, dict) and bundle.get("sha256"):
            subject["adapter_signature"] = bundle["sha256"]
        meta = {"tags": tags, "subject": subject, "previous_status": self.status, "invoked_by": state.os_user(),
                **extra}
        draft = trust.draft(self.trust, self.model, self.version, action, person, reason, evidence_digest(facts),
                            meta, self.now)
        if self.trust.policy is not None:  # never sign what the ledger's reader would not count
            problem = rule_problem(self.events, LedgerEvent(0, prev_hash="", hash="", **draft.fields),
                                   self.trust.policy)
            if problem:
                raise DecisionRefused("rule", problem)
        return Plan(kind, draft, self)

    def repair(self) -> None:
        """Once a decision is accepted: MLflow's aliases (and tags) agree with the ledger again."""
        fixed = reconcile_version(self.c, self.led, self.model, self.version, t=self.trust)  # no second ledger read
        self.repaired = list(dict.fromkeys(self.repaired + fixed))

    def unchanged(self, action: str, message: str) -> Decision:
        self.repair()
        v = self.view
        return Decision(self.model, self.version, action, self.status, v.get(Tag.APPROVAL_BY, ""),
                        v.get(Tag.APPROVAL_REASON, ""), v.get(Tag.APPROVAL_AT, ""), None, False, self.champion,
                        repaired=self.repaired, message=message)

    def changed(self, event: LedgerEvent, champion: str | None, message: str) -> Decision:
        tags = event.extra.get("tags") or {}
        return Decision(self.model, self.version, event.action, tags.get(Tag.APPROVAL_STATUS, self.status),
                        event.actor, event.reason, tags.get(Tag.APPROVAL_AT, event.at), event.seq, True, champion,
                        repaired=self.repaired,
                        message=message)


def prepare(led: Ledger, model: str, version: str, now: datetime) -> Subject:
    """Load the version as the ledger records it (counted events only); refuse it unless the ledger registered
    this very version.

    MLflow tags are never facts: a version the register step did not record (created in MLflow by hand, or before
    the ledger) is refused, not back-filled from its tags.
    """
    c = registry.client()
    mv = registry.model_version(c, model, version)
    t = trust.read(led)
    own = t.events(model=model, version=version)
    if not any(e.action == "registered" for e in own):
        raise DecisionRefused("not-registered", f"{model} v{version} has no (validly signed) `registered` event in "
                              "the ledger: the register step never recorded it (created outside adaptrail, before "
                              "the ledger, or in another ledger), so its gates are not on record. Train and register "
                              "it through the train_adapter flow")
    other = identity_problem(model, version, own, identity_of(mv))
    if other:
        raise DecisionRefused("version-identity", other)
    repaired = reconcile_version(c, led, model, version, aliases=False, t=t)  # tags only: a refusal moves no alias
    champion = expected_champion(t.events(model=model))
    return Subject(c, led, t, model, version, own, champion, repaired, now)


def reconcile_version(c: MlflowClient, led: Ledger, model: str, version: str, aliases: bool = True,
               t: trust.Trust | None = None) -> list[str]:
    """Repair the version's tags (and with ``aliases`` the champion alias) from the ledger; returns the problems."""
    mv = registry.model_version(c, model, version)
    model_events = (t or trust.read(led)).events(model=model)
    own = [e for e in model_events if e.version == version]
    if not any(e.action == "registered" for e in own) or identity_problem(model, version, own, identity_of(mv)):
        return []  # not the ledger's version: nothing of the ledger's belongs on it (the audit reports it)
    champion = champion_of(c, model)
    problems = disagreements(model, version, mv.tags, model_events, champion, identity_of(mv))
    if not problems:
        return []
    want = ledger_tags(own)
    for key, value in want.items():
        if mv.tags.get(key) != value:
            c.set_model_version_tag(model, version, key, value)
    for key in LEDGER_ONLY_TAGS:
        if key in mv.tags and key not in want:
            c.delete_model_version_tag(model, version, key)
    should = expected_champion(model_events)
    if not aliases:
        pass
    elif should == version and champion != version:
        registry.set_alias(c, model, ALIAS_CHAMPION, version)
    elif champion == version and should != version:
        if should is None:
            c.delete_registered_model_alias(model, ALIAS_CHAMPION)
        else:
            registry.set_alias(c, model, ALIAS_CHAMPION, should)
    log.warning("repaired %s v%s from the ledger: %s", model, version, "; ".join(problems))
    return problems


def mirror(c: MlflowClient, model: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        c.set_model_version_tag(model, version, key, value)


def drop_alias(s: Subject, alias: str) -> None:
    current = registry.version_by_alias(s.c, s.model, alias)
    if current is not None and str(current.version) == s.version:
        s.c.delete_registered_model_alias(s.model, alias)


def champion_of(c: MlflowClient, model: str) -> str | None:
    mv = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    return str(mv.version) if mv is not None else None
