"""The adapter's artifact signature: an OpenSSF ``model-signing`` bundle over the adapter directory.

At registration the register step signs the adapter folder with the pipeline's service key (key mode: a Sigstore
bundle with a DSSE envelope and no transparency-log entry; nothing contacts Sigstore, Rekor or Fulcio) and logs the
bundle on the run as ``signature/adapter.sig``, beside ``adapter/`` (not inside it, so the adapter's files and its
manifest stay exactly as trained). The ``registered`` event records the bundle's sha256, the files it covers and the
key that made it (``extra["adapter_signature"]``), and every decision statement names that digest in its subject:
the ledger's SSHSIG signatures sign statements about the bundle, the bundle signs the bytes — one chain.

The library accepts EC keys on NIST curves only (not Ed25519), so the service key is ECDSA P-256
(``keys.SERVICE_KEY_KIND``). Anyone can check a bundle without adaptrail::

    adaptrail signing-key MODEL/VERSION --out DIR    # pipeline.pem (from the ledger), adapter.sig, files/adapter
    model_signing verify key --signature DIR/adapter.sig --public_key DIR/pipeline.pem DIR/files/adapter

The loader and the audit check it (:func:`check`; the audit and the export through ``signed_adapter.py``): the bundle's sha256 is the recorded one, and it verifies with the
library's verifier against the public key of the service key that signed the ``registered`` event — taken from the
ledger, never from a file beside the adapter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError
from tasks.governance import keys

BUNDLE_DIR = "signature"  # the run artifact folder beside adapter/
BUNDLE_FILE = "adapter.sig"
BUNDLE_PATH = f"{BUNDLE_DIR}/{BUNDLE_FILE}"
EXTRA = "adapter_signature"  # where the registered event records the bundle
FORMAT = "openssf-model-signing/v1 (sigstore bundle v0.3, DSSE, key mode)"


def key_problem(signer: keys.Signer) -> str:
    """'' when ``signer`` can make a model-signing bundle (ECDSA P-256), else why not and how to fix it."""
    return keys.service_key_problem(signer)


def require_key(signer: keys.Signer) -> None:
    problem = key_problem(signer)
    if problem:
        raise InputError(problem)


@dataclass(frozen=True)
class Bundle:
    """A bundle as the ``registered`` event records it."""

    sha256: str
    files: dict[str, str]  # file name in the adapter folder -> sha256, as the bundle's manifest lists them
    key_id: str

    def record(self) -> dict[str, Any]:
        return {"format": FORMAT, "artifact": BUNDLE_PATH, "sha256": self.sha256, "files": dict(self.files),
                "key_id": self.key_id}


def sign(adapter_dir: Path, out: Path, signer: keys.Signer) -> Bundle:
    """Sign the folder ``adapter_dir`` with the library (key mode, offline) into ``out``; the key never leaves a
    private temporary folder, and ``out`` appears only complete."""
    from cryptography.hazmat.primitives import serialization
    from model_signing import signing

    require_key(signer)
    if not adapter_dir.is_dir():
        raise InputError(f"no adapter folder at {adapter_dir} to sign")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="adaptrail-sign-") as tmp:  # mode 0700
        pem = Path(tmp) / "service.pem"
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        part = Path(tmp) / BUNDLE_FILE
        signing.Config().use_elliptic_key_signer(private_key=pem).sign(adapter_dir, part)
        data = part.read_bytes()
    tmp_out = out.with_name(out.name + ".part")
    tmp_out.write_bytes(data)
    os.replace(tmp_out, out)
    return Bundle(hashlib.sha256(data).hexdigest(), covered_files(data), signer.key_id)


def covered_files(bundle: bytes) -> dict[str, str]:
    """The files a bundle's (signed) manifest lists, name -> sha256 ({} when it is not a bundle)."""
    try:
        payload = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
        return {str(r["name"]): str(r["digest"]) for r in payload["predicate"]["resources"]}
    except (ValueError, KeyError, TypeError):
        return {}


def verify_problem(adapter_dir: Path, bundle: Path, public: keys.PublicKey) -> str:
    """'' when the library's own verifier accepts ``bundle`` for the folder ``adapter_dir`` and the key ``public``."""
    from model_signing import verifying

    if keys.key_type(public) != keys.ECDSA_P256:
        return f"the key {keys.key_id(public)} is {keys.key_type(public)}, not an EC key the library verifies with"
    with tempfile.TemporaryDirectory(prefix="adaptrail-verify-key-") as tmp:
        pem = Path(tmp) / "service.pub.pem"
        pem.write_text(keys.public_pem(public), encoding="ascii")
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=pem).verify(adapter_dir, bundle)
        except Exception as err:  # the library raises ValueError, InvalidSignature, protobuf/JSON errors...
            text = str(err) or type(err).__name__
            if type(err).__name__ == "InvalidSignature":
                text = f"the bundle's signature does not verify with key {keys.key_id(public)}"
            return _short(text)
    return ""


def _short(text: str) -> str:
    """The library's refusal without its byte reprs of digests: which files differ, or the first 300 characters."""
    plain = text.replace("\\'", "'")  # the library formats a list: quotes may come escaped
    found = re.findall(r"(Hash mismatch for '[^']+'|(?:Extra|Missing) files(?: found)? in model '[^']*': [^\"\]]+)",
                       plain)
    if text.startswith("Signature mismatch") and found:
        return "Signature mismatch: " + "; ".join(found)
    return text[:300]


@dataclass
class Result:
    """The model-signing check of one version: ``ok``; ``legacy`` when it was registered before bundles."""

    ok: bool
    detail: str
    legacy: bool = False


def signer_of(registered: Any, unsigned: bool, policy: Any) -> tuple[keys.PublicKey | None, str]:
    """The public key the bundle must verify with: the key that signed the ``registered`` event (its signature
    counted against the policy); for a registration recorded before the policy (unsigned), the service key of the
    policy in force that the record names. (None, why) when there is none."""
    record = registered.extra.get(EXTRA) or {}
    if not unsigned:
        try:
            public = keys.signature_key(registered.extra.get("signature", ""))
        except (ValueError, TypeError):
            return None, "the registered event's signature is unreadable"
        if record.get("key_id") != keys.key_id(public):
            return None, (f"the bundle is recorded as made by key {record.get('key_id')}, but the registration is "
                          f"signed by {keys.key_id(public)}")
        return public, ""
    if policy is None:
        return None, "the ledger holds no policy, so no key is trusted to have made the bundle"
    for person in policy.content["people"].values():
        for entry in person["keys"]:
            public = keys.parse_public_key(entry["key"])
            if keys.key_id(public) == record.get("key_id") and "service" in person["roles"]:
                return public, ""
    return None, f"the bundle's key {record.get('key_id')} is not a service key of the policy in force"


def check(registered: Any, unsigned: bool, policy: Any, adapter_dir: Path | None, fetch_bundle: Any) -> Result:
    """The version's bundle against its ``registered`` event (a counted ledger event; ``unsigned``: recorded before
    the policy). ``fetch_bundle(path)`` downloads the run artifact ``signature/adapter.sig`` into ``path`` (raising
    InputError when it is missing); ``adapter_dir`` is the very copy of the adapter files the other checks read."""
    if registered is None:
        return Result(False, "the version has no counted `registered` event, so no bundle is on record")
    record = registered.extra.get(EXTRA)
    if not record:
        return Result(True, "registered before model-signing bundles: no bundle on record (the adapter digest "
                      "check still covers its files)", legacy=True)
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return Result(False, f"the registered event's {EXTRA} record is malformed")
    public, why = signer_of(registered, unsigned, policy)
    if public is None:
        return Result(False, why)
    if adapter_dir is None or not adapter_dir.is_dir():
        return Result(False, "the adapter files could not be read, so the bundle cannot be checked")
    with tempfile.TemporaryDirectory(prefix="adaptrail-bundle-") as tmp:
        bundle = Path(tmp) / BUNDLE_FILE
        try:
            fetch_bundle(bundle)
        except InputError as err:
            return Result(False, f"the bundle {record.get('artifact', BUNDLE_PATH)} is missing: {err}")
        digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
        if digest != record["sha256"]:
            return Result(False, f"the stored bundle's sha256 {digest[:16]}... is not the one the registration "
                          f"recorded, {record['sha256'][:16]}... (bundle replaced)")
        bad = verify_problem(adapter_dir, bundle, public)
    if bad:
        return Result(False, f"the library's verifier refuses the adapter: {bad}")
    return Result(True, f"OpenSSF model-signing bundle {digest[:16]}... verifies over {len(record.get('files') or {})}"
                  f" files with service key {keys.key_id(public)}")


def check_version(own: list[Any], unsigned: set[int], policy: Any, adapter_dir: Path | None, run_id: str | None
                  ) -> Result:
    """:func:`check` for a version's counted events ``own`` (``unsigned``: the seqs recorded before the policy),
    fetching the bundle from its MLflow run."""
    registered = next((e for e in own if e.action == "registered"), None)
    return check(registered, registered is not None and registered.seq in unsigned, policy, adapter_dir,
                 run_bundle(run_id))


def sign_and_log(c: Any, run_id: str, adapter_dir: Path, workdir: Path) -> dict[str, Any]:
    """The register step's signature: sign ``adapter_dir`` with the service key into ``workdir/signature/`` and log
    it on the run as ``signature/adapter.sig``; returns what the ``registered`` event records. A retry of the step
    reuses the bundle an earlier attempt made (and may already have recorded)."""
    from tasks.governance import registry

    signer, out = keys.service_signer(), workdir / BUNDLE_DIR / BUNDLE_FILE
    if out.is_file() and not verify_problem(adapter_dir, out, signer.public):  # a retry of this run: the same bundle
        data = out.read_bytes()           # (ECDSA signatures differ each time; an earlier attempt may have recorded it)
        bundle = Bundle(hashlib.sha256(data).hexdigest(), covered_files(data), signer.key_id)
    else:
        bundle = sign(adapter_dir, out, signer)
    registry.log_path(c, run_id, workdir / BUNDLE_DIR / BUNDLE_FILE, BUNDLE_DIR)
    return bundle.record()


def run_bundle(run_id: str | None) -> Any:
    """``fetch_bundle`` for :func:`check`: the run's ``signature/adapter.sig`` (any MLflow artifact store)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tasks.core import state
    from tasks.governance import registry

    def fetch(dst: Path) -> None:
        if not run_id:
            raise InputError("the version has no MLflow run")
        with tempfile.TemporaryDirectory(prefix="adaptrail-bundle-dl-") as tmp:
            try:
                got = registry.read(f"{BUNDLE_PATH} of run {run_id}", lambda: mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=BUNDLE_PATH, dst_path=tmp, tracking_uri=state.tracking_uri()))
            except (MlflowException, OSError) as err:
                raise InputError(f"cannot read {BUNDLE_PATH} of run {run_id}: {str(err)[:200]}") from None
            if not Path(got).is_file():
                raise InputError(f"{BUNDLE_PATH} of run {run_id} is not a file")
            dst.write_bytes(Path(got).read_bytes())

    return fetch

