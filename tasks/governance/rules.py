"""The decision rules: who may decide (the policy in the ledger), separation of duties, reasons, overrides.

Identities are the people of the policy, known by their keys: a decision is made by whoever's key signs it.
Every decision needs a reason and a key with the ``approver`` role; approving and reviewing also need a person other
than the run's requester, and, when a gate failed, ``override`` by two distinct approvers: the first records an
``overridden`` event awaiting a second, the second (another person's key) confirms it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tasks.core.errors import Refused
from tasks.core.names import Tag
from tasks.governance.ledger import LedgerEvent
from tasks.governance.event_rules import NOT_DECISIONS, failed_gates as event_failed_gates
from tasks.governance.policy import Policy


class DecisionRefused(Refused):
    """A decision broke a rule; nothing was written. ``rule`` names it (allow-list, separation-of-duties, ...)."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(f"refused ({rule}): {message}")


class Subject(Protocol):
    """What the rules read about one version: the ledger's view of its tags and its counted events."""

    model: str
    version: str

    @property
    def view(self) -> dict[str, str]: ...

    @property
    def events(self) -> Sequence[LedgerEvent]: ...


def pending_override(s: Subject) -> LedgerEvent | None:
    """The version's last event (reproductions and monitoring aside), when it is a first override still awaiting its
    second approver."""
    last = next((e for e in reversed(s.events) if e.action not in NOT_DECISIONS), None)
    return last if last is not None and last.action == "overridden" and last.extra.get("awaiting_second") else None


def check_override(s: Subject, person: str, override: bool) -> tuple[list[str], LedgerEvent | None]:
    """([], None) when the gates passed. Otherwise (failed gates, the first override this decision confirms, or None
    when this decision is itself the first override)."""
    failed = failed_gates(s)
    if not failed:
        return [], None
    if not override:
        raise DecisionRefused("override", f"gates failed for {s.model} v{s.version} ({', '.join(failed)}); approving "
                              "needs --override and a reason, then a second, distinct approver confirms with "
                              "--override too")
    first = pending_override(s)
    if first is not None and _norm(first.actor) == _norm(person):
        raise DecisionRefused("second-approver", f"{person!r} already recorded the first override (seq {first.seq}); "
                              "the second approver must be another person, with their own key")
    return failed, first


def failed_gates(s: Subject) -> list[str]:
    """Gates that failed per the ledger: the registration's gate tags, gate_failed events, a gate rejection."""
    return event_failed_gates(s.events)


def require_decider(s: Subject, policy: Policy, person: str, reason: str, separate_from_requester: str | None = None
                    ) -> None:
    """Every decision's rules: a reason and an approver of the policy; approving and reviewing (named by
    ``separate_from_requester``) also need a person other than the requester of the run."""
    require_reason(reason)
    if person not in policy.people_with("approver"):
        raise DecisionRefused("allow-list", f"{person!r} is not an approver in the policy (approvers: "
                              f"{', '.join(policy.people_with('approver')) or 'none'}); an admin adds them with "
                              "`adaptrail policy add NAME --role approver --pubkey KEY.pub`")
    if separate_from_requester:
        require_not_requester(s, person, separate_from_requester)
        registered = next((e for e in s.events if e.action == "registered"), None)
        if policy.require_signed_requests and registered is not None and "request" not in registered.extra:
            raise DecisionRefused("unsigned-request", f"the policy requires signed run requests, and the requester of "
                                  f"{s.model} v{s.version} ({s.view.get(Tag.REQUESTED_BY, '?')}) did not sign one; "
                                  "train it again with `adaptrail run --key YOUR_KEY`")


def require_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise DecisionRefused("reason", "give a reason (--reason TEXT); the ledger records why")


def require_not_requester(s: Subject, person: str, what: str) -> None:
    requester = s.view.get(Tag.REQUESTED_BY, "")
    if not requester:
        raise DecisionRefused("separation-of-duties", f"{s.model} v{s.version} records no {Tag.REQUESTED_BY}, so "
                              "separation of duties cannot be checked; register it through the train_adapter flow")
    if _norm(person) == _norm(requester):
        raise DecisionRefused("separation-of-duties", f"{person!r} requested the training run of {s.model} "
                              f"v{s.version} and may not {what} it; ask another approver")


def _norm(identity: str) -> str:
    return identity.strip().casefold()
