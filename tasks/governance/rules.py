"""The decision rules: who may decide (the policy), separation of duties, reasons, overrides of failed gates.

Every decision needs a reason and an allow-listed identity; approving and reviewing also need an identity other
than the run's requester, and, when a gate failed, ``override`` with a second, distinct approver. Identities are
compared case-insensitively. They are claims (``ADAPTRAIL_USER``, ``--as``); the ledger records them with the OS
user that ran the command and where the allow-list came from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tasks.core.config import ApprovalConfig
from tasks.core.errors import InputError
from tasks.core.names import DEFAULT_REVIEW_PERIOD_DAYS, GATES, MAX_REVIEW_PERIOD_DAYS, ApprovalStatus, GateOutcome, Tag
from tasks.governance.ledger import LedgerEvent

ENV_APPROVERS = "ADAPTRAIL_APPROVERS"
ENV_REVIEW_PERIOD_DAYS = "ADAPTRAIL_REVIEW_PERIOD_DAYS"
ENV_PUBLIC_KEY = "ADAPTRAIL_PUBLIC_KEY"
ENV_PRIVATE_KEY = "ADAPTRAIL_SIGNING_KEY"


class DecisionRefused(InputError):
    """A decision broke a rule; nothing was written. ``rule`` names it (allow-list, separation-of-duties, ...)."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(f"refused ({rule}): {message}")


@dataclass(frozen=True)
class Policy:
    """Who may decide, how long an approval lasts, which keys sign and verify. Built by :meth:`resolve`."""

    approvers: tuple[str, ...] = ()
    review_period_days: int = DEFAULT_REVIEW_PERIOD_DAYS
    public_key: str | None = None
    private_key: str | None = None
    source: str = "none"  # where the allow-list came from; recorded in the ledger

    @classmethod
    def resolve(cls, approval: ApprovalConfig | None = None, review_period_days: int | None = None) -> "Policy":
        """Config values where given, else the environment (``ADAPTRAIL_APPROVERS`` etc.), else defaults."""
        if approval is not None and approval.approvers:
            approvers, source = tuple(approval.approvers), "config approval.approvers"
        elif os.environ.get(ENV_APPROVERS, "").strip():
            approvers = tuple(a.strip() for a in os.environ[ENV_APPROVERS].split(",") if a.strip())
            source = f"env {ENV_APPROVERS}"
        else:
            approvers, source = (), "none"
        days = review_period_days or _env_days()
        public = (approval.public_key if approval else None) or os.environ.get(ENV_PUBLIC_KEY) or None
        private = (approval.private_key if approval else None) or os.environ.get(ENV_PRIVATE_KEY) or None
        return cls(approvers, days, public, private, source)

    def __post_init__(self) -> None:
        if not 1 <= self.review_period_days <= MAX_REVIEW_PERIOD_DAYS:
            raise InputError(f"review period {self.review_period_days} days is outside 1..{MAX_REVIEW_PERIOD_DAYS}")

    def allows(self, identity: str) -> bool:
        return _norm(identity) in {_norm(a) for a in self.approvers}


class Subject(Protocol):
    """What the rules read about one version: the ledger's view of its tags and its events."""

    model: str
    version: str

    @property
    def view(self) -> dict[str, str]: ...

    @property
    def events(self) -> Sequence[LedgerEvent]: ...


def check_override(s: Subject, policy: Policy, actor: str, override: bool, second: str | None) -> list[str]:
    """[] when the gates passed; the failed gates when a valid override allows approving anyway."""
    failed = failed_gates(s)
    if not failed:
        return []
    if not override:
        raise DecisionRefused("override", f"gates failed for {s.model} v{s.version} ({', '.join(failed)}); approving "
                              "needs --override, a reason and --second-approver ID (a second, distinct approver)")
    if not second or not second.strip():
        raise DecisionRefused("second-approver", "an override needs a second approver: --second-approver ID")
    if _norm(second) == _norm(actor):
        raise DecisionRefused("second-approver", f"the second approver must differ from the first ({actor!r})")
    require_approver(second, policy)
    require_not_requester(s, second, "confirm an override of")
    return failed


def failed_gates(s: Subject) -> list[str]:
    """Gates that failed per the ledger: gate tags recorded at registration, gate_failed events, a gate rejection."""
    view = s.view
    failed = {g for g in GATES if view.get(Tag.gate(g)) == GateOutcome.FAILED}
    failed |= {str(e.extra.get("gate", "?")) for e in s.events if e.action == "gate_failed"}
    registered = [e for e in s.events if e.action == "registered"]
    if registered and (registered[0].extra.get("tags") or {}).get(Tag.APPROVAL_STATUS) == ApprovalStatus.REJECTED:
        failed = failed or {"registration"}
    return sorted(failed)


def require_decider(s: Subject, policy: Policy, actor: str, reason: str, separate_from_requester: str | None = None
                    ) -> None:
    """Every decision's rules: a reason and an allow-listed identity; approving and reviewing (named by
    ``separate_from_requester``) also need an identity other than the requester of the run."""
    require_reason(reason)
    require_approver(actor, policy)
    if separate_from_requester:
        require_not_requester(s, actor, separate_from_requester)


def require_reason(reason: str) -> None:
    if not isinstance(reason, str) or not reason.strip():
        raise DecisionRefused("reason", "give a reason (--reason TEXT); the ledger records why")


def require_approver(identity: str, policy: Policy) -> None:
    if not isinstance(identity, str) or not identity.strip():
        raise DecisionRefused("identity", "no identity given; set ADAPTRAIL_USER or pass --as ID")
    if not policy.approvers:
        raise DecisionRefused("allow-list", f"no approvers are configured; set {ENV_APPROVERS}=alice,bob (or "
                              "approval.approvers in the config)")
    if not policy.allows(identity):
        raise DecisionRefused("allow-list", f"{identity!r} is not on the approver allow-list ({policy.source}: "
                              f"{', '.join(policy.approvers)})")


def require_not_requester(s: Subject, identity: str, what: str) -> None:
    requester = s.view.get(Tag.REQUESTED_BY, "")
    if not requester:
        raise DecisionRefused("separation-of-duties", f"{s.model} v{s.version} records no {Tag.REQUESTED_BY}, so "
                              "separation of duties cannot be checked; register it through the train_adapter flow")
    if _norm(identity) == _norm(requester):
        raise DecisionRefused("separation-of-duties", f"{identity!r} requested the training run of {s.model} "
                              f"v{s.version} and may not {what} it; ask another approver")


def _env_days() -> int:
    raw = os.environ.get(ENV_REVIEW_PERIOD_DAYS, "").strip()
    if not raw:
        return DEFAULT_REVIEW_PERIOD_DAYS
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_REVIEW_PERIOD_DAYS:
        raise InputError(f"{ENV_REVIEW_PERIOD_DAYS}={raw!r} must be a whole number of days from 1 to "
                         f"{MAX_REVIEW_PERIOD_DAYS}, e.g. {DEFAULT_REVIEW_PERIOD_DAYS}")
    return int(raw)


def _norm(identity: str) -> str:
    return identity.strip().casefold()
