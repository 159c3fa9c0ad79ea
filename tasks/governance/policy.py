"""The policy: who holds which keys and may do what, the review-period cap, the loading rule (DESIGN.md: trust model).

An admin writes it as a YAML file and applies it with ``adaptrail policy apply FILE --key ADMIN_KEY``: the ledger
then holds a ``policy`` event with the policy's content, its digest and the admin's signature. Decisions read the
policy from the ledger only, never from the environment, a flow parameter or a training config. A change is another
signed ``policy`` event by an admin of the policy in force; the first one is signed by an admin it names itself
(its place at the start of the chain is kept by the checkpoints).

    review_period_days: 182          # an approval lasts this long (1..366)
    require_signed_approval: true    # loading refuses an approval recorded before signing (an unsigned event)
    require_signed_requests: false   # true: only runs whose requester signed the request (`run --key`) are approved
    skip_unloadable_champion: false  # true: a champion that cannot be loaded is skipped by the gates (noted)
    monitoring:                      # `adaptrail monitor` judges new data with these (all optional; defaults below)
      on_review_required: warn       # warn | refuse: what verify/predict do with a version monitoring sent back
      max_embedding_auc: 0.7         # and the other thresholds of MonitoringPolicy
    people:
      admin:    {roles: [admin],    keys: ["ssh-ed25519 AAAA... admin@laptop"]}
      pipeline: {roles: [service],  keys: ["ecdsa-sha2-nistp256 AAAA... adaptrail-service"]}
      alice:
        roles: [approver]
        keys:
          - "ssh-ed25519 AAAA... alice@new-laptop"
          - {key: "ssh-ed25519 AAAA... alice@old", revoked_at: "2026-11-01T00:00:00Z"}

Roles: ``admin`` signs policy changes; ``approver`` signs decisions (approve, reject, revoke, review, override);
``service`` signs what the pipeline records (registrations, failed gates, expiries, reproductions, monitoring
results and the ``review_required`` a breach sets; only an approver's ``review`` clears it). A revoked key's signatures
dated at or after ``revoked_at`` are refused; earlier ones still verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.core.canonical import json_sha256
from tasks.core.errors import InputError
from tasks.core.names import DEFAULT_REVIEW_PERIOD_DAYS, MAX_REVIEW_PERIOD_DAYS
from tasks.governance import keys

Role = Literal["admin", "approver", "service"]
#: The ledger "model" and "version" of policy events (not a registered model: MLflow names cannot hold parentheses).
POLICY_MODEL, POLICY_VERSION = "(policy)", "policy"
#: Which role may sign which ledger action.
SIGNS: dict[str, tuple[str, ...]] = {
    "policy": ("admin",),
    "registered": ("service",), "gate_failed": ("service",),
    "expired": ("service", "approver"),
    "approved": ("approver",), "rejected": ("approver",), "revoked": ("approver",), "reviewed": ("approver",),
    "overridden": ("approver",),
    "reproduced": ("service",),  # `adaptrail reproduce`: a statement about the bytes, never about approval
    # monitoring: a result, and a breach that sends the version back to a person; only a review clears it
    "monitored": ("service",), "review_required": ("service",),
}


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="an `ssh-ed25519 AAAA...` (or `ecdsa-sha2-nistp256 AAAA...`) public key line")
    revoked_at: str | None = Field(None, description="ISO-8601 UTC; signatures dated at or after it are refused")

    @field_validator("key")
    @classmethod
    def _parse(cls, v: str) -> str:
        keys.parse_public_key(v)
        return " ".join(v.split()[:2])  # without the comment: the digest does not change with it

    @field_validator("revoked_at")
    @classmethod
    def _when(cls, v: str | None) -> str | None:
        from tasks.governance.ledger import format_at

        return format_at(v) if v else None


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Role] = Field(default_factory=list, description="none: a known key that may sign nothing yet")
    keys: list[KeyEntry] = Field(min_length=1)

    @field_validator("keys", mode="before")
    @classmethod
    def _lines(cls, v: Any) -> Any:
        return [{"key": k} if isinstance(k, str) else k for k in v] if isinstance(v, list) else v


class MonitoringPolicy(BaseModel):
    """What monitoring judges a batch of new texts by (``adaptrail monitor``). Drift is judged on effect sizes —
    at 10,000 texts every difference is significant — and counts only when it is also significant at ``alpha``.
    A training config's ``monitoring:`` section may tighten the ``max_*`` thresholds, never loosen them."""

    model_config = ConfigDict(extra="forbid")
    on_review_required: Literal["warn", "refuse"] = Field(
        "warn", description="what verify/predict do with a version in review_required: warn, or refuse to load it")
    min_rows: int = Field(100, ge=10, description="fewer texts in a batch: the outcome is insufficient_data")
    min_group_rows: int = Field(30, ge=5, description="groups (and classes) with fewer labelled rows: reported only")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level of the drift tests")
    max_prediction_psi: float = Field(0.2, gt=0, description="PSI of the predicted-label distribution")
    max_length_drift: float = Field(0.3, gt=0, description="Wasserstein distance of text lengths / reference std")
    max_oov_increase: float = Field(0.1, gt=0, description="rise in the share of words unseen in training")
    max_embedding_auc: float = Field(0.7, gt=0.5, le=1.0, description=(
        "ROC AUC of a classifier telling batch from reference on the base encoder's embeddings (0.5: alike)"))
    max_confidence_drop: float = Field(0.1, gt=0, description="fall of the mean top-class probability")
    max_accuracy_drop: float = Field(0.05, gt=0, description="labelled batches: accuracy below the reference's")
    max_macro_f1_drop: float = Field(0.05, gt=0, description="labelled batches: macro-F1 below the reference's")
    bootstrap_samples: int = Field(500, ge=50, le=20_000, description="resamples for the metrics' intervals")
    allow_examples: bool = Field(False, description="reports may show a few redacted example texts of a breach")


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    review_period_days: int = Field(DEFAULT_REVIEW_PERIOD_DAYS, ge=1, le=MAX_REVIEW_PERIOD_DAYS)
    require_signed_approval: bool = True
    require_signed_requests: bool = False
    skip_unloadable_champion: bool = False
    monitoring: MonitoringPolicy = Field(default_factory=MonitoringPolicy)
    people: dict[str, Person] = Field(min_length=1)


@dataclass(frozen=True)
class Holder:
    """Who holds a key, with which roles, and since when it is revoked (None: not revoked)."""

    person: str
    roles: tuple[str, ...]
    revoked_at: str | None


@dataclass(frozen=True)
class Policy:
    """A validated policy; ``digest`` is the sha256 of its canonical JSON (what the ledger pins)."""

    content: dict[str, Any]

    @classmethod
    def parse(cls, data: Any, source: str = "policy") -> "Policy":
        try:
            model = PolicyFile.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise InputError(f"{source} is not a valid policy: {problems}") from None
        if not any("admin" in p.roles for p in model.people.values()):
            raise InputError(f"{source} names no admin: give at least one person `roles: [admin]`")
        seen: dict[str, str] = {}
        for name, person in model.people.items():
            for entry in person.keys:
                kid = keys.key_id(keys.parse_public_key(entry.key))
                if kid in seen:
                    raise InputError(f"{source}: key {kid} is listed for both {seen[kid]!r} and {name!r}; a key "
                                     "belongs to one person")
                seen[kid] = name
        return cls(model.model_dump(mode="json"))

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        p = Path(path).expanduser()
        if not p.is_file():
            raise InputError(f"policy file not found: {p}; `adaptrail init` writes one, or see README (Keys)")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise InputError(f"{p} is not valid YAML: {err}") from None
        return cls.parse(data, str(p))

    @property
    def digest(self) -> str:
        return json_sha256(self.content)

    @property
    def review_period_days(self) -> int:
        return int(self.content["review_period_days"])

    @property
    def require_signed_approval(self) -> bool:
        return bool(self.content["require_signed_approval"])

    @property
    def require_signed_requests(self) -> bool:
        return bool(self.content.get("require_signed_requests", False))

    @property
    def skip_unloadable_champion(self) -> bool:
        return bool(self.content["skip_unloadable_champion"])

    @property
    def monitoring(self) -> MonitoringPolicy:
        return MonitoringPolicy.model_validate(self.content.get("monitoring") or {})

    def holder(self, public: keys.PublicKey) -> Holder | None:
        """Who holds this key in the policy (None: an unknown key)."""
        want = " ".join(keys.public_line(public).split()[:2])
        for name, person in self.content["people"].items():
            for entry in person["keys"]:
                if entry["key"] == want:
                    return Holder(name, tuple(person["roles"]), entry.get("revoked_at"))
        return None

    def key_problem(self, public: keys.PublicKey, action: str, at: str) -> tuple[str, str]:
        """(person, '') when this key may sign ``action`` at time ``at`` (formatted UTC), else ('', why not)."""
        holder = self.holder(public)
        kid = keys.key_id(public)
        if holder is None:
            return "", f"key {kid} is not in the policy"
        allowed = SIGNS.get(action, ())
        if not set(holder.roles) & set(allowed):
            return "", (f"key {kid} of {holder.person!r} (roles: {', '.join(holder.roles)}) may not sign "
                        f"`{action}` (needs: {', '.join(allowed) or 'nobody'})")
        if holder.revoked_at and at >= holder.revoked_at:
            return "", f"key {kid} of {holder.person!r} was revoked at {holder.revoked_at}, before {at}"
        return holder.person, ""

    def people_with(self, role: str) -> list[str]:
        return sorted(n for n, p in self.content["people"].items() if role in p["roles"])

    def revocations(self) -> dict[str, str]:
        """Public key line -> revoked_at, for every revoked key (applied to earlier events when judging them)."""
        return {e["key"]: e["revoked_at"] for p in self.content["people"].values() for e in p["keys"]
                if e.get("revoked_at")}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.content, sort_keys=False)


def revoked_since(revocations: dict[str, str], public: keys.PublicKey, at: str) -> str | None:
    """The revocation time of this key if ``at`` is at or after it (a later policy may revoke retroactively)."""
    when = revocations.get(" ".join(keys.public_line(public).split()[:2]))
    return when if when and at >= when else None


def starter(admin: str, admin_key: str, service_key: str, approvers: dict[str, str] | None = None) -> Policy:
    """The policy ``adaptrail init`` writes: one admin, the pipeline's service key, optional approvers."""
    people: dict[str, Any] = {admin: {"roles": ["admin"], "keys": [admin_key]},
                              "pipeline": {"roles": ["service"], "keys": [service_key]}}
    for name, key in (approvers or {}).items():
        people[name] = {"roles": ["approver"], "keys": [key]}
    return Policy.parse({"people": people}, "starter policy")

