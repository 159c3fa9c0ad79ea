"""A registered version's model-signing bundle as stored: the audit's check and findings, and the export that lets
anyone check it with the library's own CLI (``adaptrail signing-key``). The bundle itself: ``attestation.py``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError
from tasks.governance import attestation, keys, ledger_view, registry, trust
from tasks.governance.ledger import Ledger, LedgerEvent
from tasks.governance.loader import fetch_adapter


def version_check(mv: Any, own: list[LedgerEvent], t: trust.Trust, folder: Path | str) -> dict[str, Any]:
    """The audit's model-signing check of one version (``own``: its counted events; ``folder``: the stored adapter
    the audit re-hashed, or why it could not be read): ok, detail, legacy."""
    r = attestation.check_version(own, t.unsigned, t.policy, folder if isinstance(folder, Path) else None, mv.run_id)
    return {"ok": r.ok, "detail": r.detail, "legacy": r.legacy}


def findings(model: str, version: str, recorded: bool, result: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(severity, code, model, version, message): critical ``adapter-signature`` when the check fails, low
    ``adapter-unsigned`` for a version registered before bundles; none for a version the ledger never registered
    (reported as such) or one not re-hashed (``result`` empty)."""
    if not recorded or not result:
        return []
    if not result.get("ok"):
        return [("critical", "adapter-signature", model, version,
                 "the adapter fails its OpenSSF model-signing check: " + str(result.get("detail", "")))]
    if result.get("legacy"):
        return [("low", "adapter-unsigned", model, version, str(result.get("detail", "")))]
    return []


@dataclass
class Export:
    public_key: Path
    bundle: Path
    adapter: Path
    key_id: str
    command: str


def export(model: str, version: str, out: Path | None = None) -> tuple[str, Export | None]:
    """The PEM public key that made ``model`` v``version``'s bundle, as the ledger vouches for it (the key that
    signed the counted ``registered`` event); with ``out`` also the bundle (checked against its recorded digest)
    and the adapter files, so ``model_signing verify key`` runs there without adaptrail."""
    with Ledger() as led:
        t = trust.read(led)
    own = t.events(model=model, version=version)
    registered = next((e for e in own if e.action == "registered"), None)
    if registered is None:
        raise InputError(f"{model} v{version} has no counted `registered` event in the ledger")
    record = registered.extra.get(attestation.EXTRA)
    if not record:
        raise InputError(f"{model} v{version} was registered before model-signing bundles: it has none to check")
    public, why = attestation.signer_of(registered, registered.seq in t.unsigned, t.policy)
    if public is None:
        raise InputError(f"{model} v{version}: {why}")
    pem = keys.public_pem(public)
    if out is None:
        return pem, None
    mv = registry.model_version(registry.client(), model, version)
    problem = ledger_view.identity_problem(model, version, own, ledger_view.identity_of(mv))
    if problem:
        raise InputError(problem)
    out.mkdir(parents=True, exist_ok=True)
    key_path, bundle_path = out / "pipeline.pem", out / attestation.BUNDLE_FILE
    key_path.write_text(pem, encoding="ascii")
    attestation.run_bundle(mv.run_id)(bundle_path)
    if hashlib.sha256(bundle_path.read_bytes()).hexdigest() != record.get("sha256"):
        raise InputError(f"the stored bundle of {model} v{version} is not the one its registration recorded "
                         f"(replaced); `adaptrail verify {model}/{version}` reports it")
    adapter = fetch_adapter(mv.source, out / "files")
    command = f"model_signing verify key --signature {bundle_path} --public_key {key_path} {adapter}"
    return pem, Export(key_path, bundle_path, adapter, keys.key_id(public), command)
