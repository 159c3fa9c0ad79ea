"""Optional ed25519 signature of an adapter's manifest (``cryptography``), verified on load when a key is configured.

The signature is kept in model-version tags, not as a file: ``tasks/adapter.py`` hashes every file of the adapter
folder except ``manifest.json``, so a ``manifest.sig`` beside it would change ``adapter.digest``; and a tag can be
set when the version is approved, long after its run's artifacts were written, shows in the MLflow UI next to
``adapter.digest``, and is mirrored into the approval ledger (so deleting or swapping it is detected).

What is signed: the exact bytes of ``manifest.json`` (the sha256 of every adapter file and their digest).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.core.errors import InputError
from tasks.core.names import TAG_PREFIX

TAG_SIGNATURE = TAG_PREFIX + "adapter.signature"
TAG_SIGNATURE_KEY = TAG_PREFIX + "adapter.signature.key"


def generate_keypair(private_path: Path, public_path: Path) -> str:
    """Write a new ed25519 key pair as PEM (private key readable by the owner only); returns the key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    for p in (private_path, public_path):
        if p.exists():
            raise InputError(f"{p} exists; refusing to overwrite a key (move it away or pick another path)")
        p.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw public key: names the key in tags and messages."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(_read_key(path, "private"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{path} is not an ed25519 private key; create one with "
                         "`python -m tasks.governance.signing keygen DIR`")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(_read_key(path, "public"))
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{path} is not an ed25519 public key; create one with "
                         "`python -m tasks.governance.signing keygen DIR`")
    return key


def sign_manifest(manifest_bytes: bytes, private_key_path: str | Path) -> dict[str, str]:
    """The signature tags for these manifest bytes: base64 signature and the signing key's id."""
    key = load_private_key(private_key_path)
    return {TAG_SIGNATURE: base64.b64encode(key.sign(manifest_bytes)).decode("ascii"),
            TAG_SIGNATURE_KEY: key_id(key.public_key())}


def signature_problem(manifest_bytes: bytes, tags: dict[str, str], public_key_path: str | Path) -> str:
    """'' when ``tags`` hold a valid signature of the manifest by the configured key, else what is wrong."""
    public = load_public_key(public_key_path)
    encoded = tags.get(TAG_SIGNATURE)
    if not encoded:
        return f"the version carries no {TAG_SIGNATURE} tag (unsigned) but a public key is configured"
    signed_by = tags.get(TAG_SIGNATURE_KEY, "?")
    if signed_by != key_id(public):
        return f"signed by key {signed_by}, but the configured public key is {key_id(public)}"
    try:
        public.verify(base64.b64decode(encoded, validate=True), manifest_bytes)
    except (InvalidSignature, ValueError):
        return "the signature does not match manifest.json (manifest or signature changed)"
    return ""


def _read_key(path: str | Path, kind: str) -> bytes:
    p = Path(path).expanduser()
    if not p.is_file():
        env = "ADAPTRAIL_PUBLIC_KEY" if kind == "public" else "ADAPTRAIL_SIGNING_KEY"
        raise InputError(f"{kind} key file not found: {p}; fix approval.{kind}_key (or {env}) or unset it")
    return p.read_bytes()


def main(argv: list[str]) -> int:
    """``python -m tasks.governance.signing keygen DIR``: write DIR/adaptrail-signing.pem and DIR/adaptrail-signing.pub.pem."""
    if len(argv) != 2 or argv[0] != "keygen":
        print("usage: python -m tasks.governance.signing keygen DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    private, public = out / "adaptrail-signing.pem", out / "adaptrail-signing.pub.pem"
    try:
        kid = generate_keypair(private, public)
    except InputError as err:
        print(f"adaptrail: error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"key {kid}: private {private} (keep it secret; ADAPTRAIL_SIGNING_KEY), public {public} "
          "(ADAPTRAIL_PUBLIC_KEY)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
