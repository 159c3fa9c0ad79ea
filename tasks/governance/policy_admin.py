"""Setting up and changing the policy: ``adaptrail init``, ``policy apply``, ``policy add``, ``policy revoke-key``.

Every change is a ``policy`` ledger event signed by an admin of the policy in force (the first by an admin it names
itself). ``init`` sets up one laptop in one command: the pipeline's service key, an admin key, a policy file naming
both, applied to the ledger.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tasks.core.errors import InputError
from tasks.core.state import home, os_user
from tasks.governance import keys, trust
from tasks.governance.ledger import Ledger, LedgerEvent, format_at
from tasks.governance.ledger_view import decision_time
from tasks.governance.policy import POLICY_MODEL, POLICY_VERSION, Policy, starter

ENV_POLICY = "ADAPTRAIL_POLICY"


def policy_path() -> Path:
    """Where ``init`` writes the policy file: ``ADAPTRAIL_POLICY``, default ``$ADAPTRAIL_HOME/policy.yaml``."""
    return Path(os.environ.get(ENV_POLICY) or home() / "policy.yaml").expanduser()


def current() -> Policy | None:
    with Ledger() as led:
        return trust.read(led).policy


def apply(policy: Policy, signer: keys.Signer, reason: str, now: datetime | None = None) -> LedgerEvent | None:
    """Pin ``policy`` in the ledger, signed by ``signer`` (an admin of the policy in force, or of ``policy`` itself
    when it is the first); None when it is already the policy in force."""
    now = decision_time(now)
    with Ledger() as led:
        t = trust.read(led)
        if t.policy is not None and t.policy.digest == policy.digest:
            return None
        judge = t.policy or policy
        holder = judge.holder(signer.public)
        if holder is None or "admin" not in holder.roles:
            raise trust.SignatureRefused(f"refused: key {signer.key_id} ({signer.source}) is not an admin key of the "
                                         f"{'policy in force' if t.policy else 'new policy'}; a policy change is "
                                         f"signed by an admin ({', '.join(judge.people_with('admin'))})")
        d = trust.draft(t, POLICY_MODEL, POLICY_VERSION, "policy", holder.person, reason or "policy change", "",
                        {"policy": policy.content, "policy_digest": policy.digest}, now)
        return trust.commit(led, d, signer.sign(d.statement), judge)


def add_person(name: str, role: str, public_key: str, signer: keys.Signer, reason: str = "") -> LedgerEvent | None:
    """The policy in force plus ``name`` holding ``public_key`` with ``role`` (added to their roles and keys)."""
    base = _required()
    content = copy.deepcopy(base.content)
    person = content["people"].setdefault(name, {"roles": [], "keys": []})
    if role not in person["roles"]:
        person["roles"].append(role)
    line = " ".join(public_key.split()[:2])
    if line not in [k["key"] for k in person["keys"]]:
        person["keys"].append({"key": line, "revoked_at": None})
    return apply(Policy.parse(content, "the changed policy"), signer, reason or f"add {name} as {role}")


def revoke_key(name: str, fingerprint: str, signer: keys.Signer, at: datetime | None = None, reason: str = ""
               ) -> LedgerEvent | None:
    """Mark one of ``name``'s keys revoked from ``at`` (default now): its later signatures stop counting."""
    base = _required()
    content = copy.deepcopy(base.content)
    person = content["people"].get(name)
    entries = [k for k in (person or {}).get("keys", [])
               if keys.key_id(keys.parse_public_key(k["key"])) == fingerprint]
    if not entries:
        raise InputError(f"{name!r} holds no key {fingerprint} in the policy; `adaptrail policy show` lists them")
    entries[0]["revoked_at"] = format_at(decision_time(at))
    return apply(Policy.parse(content, "the changed policy"), signer, reason or f"revoke key {fingerprint} of {name}")


@dataclass
class Setup:
    policy_file: Path
    admin_key: Path
    service_key: Path
    event: LedgerEvent | None


def init(admin: str | None = None, admin_key: str | None = None) -> Setup:
    """One laptop: the service key, an admin key (``admin_key`` or a new ``$ADAPTRAIL_HOME/keys/ADMIN``), the policy
    file naming both (kept if it exists), applied to the ledger unless a policy is already in force."""
    admin = admin or os_user()
    service = trust.service_signer()
    key_path = Path(admin_key).expanduser() if admin_key else home() / "keys" / admin
    signer = keys.load_signer(key_path) if key_path.is_file() else keys.keygen(key_path, f"{admin}@adaptrail")
    path = policy_path()
    if path.is_file():
        policy = Policy.load(path)
    else:
        policy = starter(admin, keys.public_line(signer.public), keys.public_line(service.public))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# adaptrail policy (see tasks/governance/policy.py); change it with "
                        "`adaptrail policy apply FILE --key ADMIN_KEY`\n" + policy.to_yaml(), encoding="utf-8")
    existing = current()
    event = None if existing is not None else apply(policy, signer, "initial policy (adaptrail init)")
    return Setup(path, key_path, trust.service_key_path(), event)


def _required() -> Policy:
    policy = current()
    if policy is None:
        raise InputError("the ledger holds no policy yet; run `adaptrail init` or `adaptrail policy apply FILE --key "
                         "ADMIN_KEY` first")
    return policy
