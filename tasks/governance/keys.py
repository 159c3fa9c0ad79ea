"""Ed25519 keys and signatures in the SSH formats engineers already use (``ssh-keygen``, git commit signing).

A key is named by its SHA256 fingerprint, exactly as ``ssh-keygen -lf KEY.pub`` prints it (``SHA256:...``). A
signature is an SSHSIG blob in the namespace ``adaptrail``: ``adaptrail sign`` writes it as one base64 line (easy to
paste into a form), and ``ssh-keygen -Y sign -n adaptrail -f ~/.ssh/id_ed25519 FILE`` writes the same blob armored;
both are accepted. So a key kept in ssh-agent or behind a passphrase works through ``ssh-keygen``.

Private keys: OpenSSH (``ssh-keygen -t ed25519``) or PKCS#8 PEM, unencrypted. Public keys: an ``ssh-ed25519 AAAA...``
line (``KEY.pub``, an ``allowed_signers`` entry without its principal) or PEM.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tasks.core.errors import InputError
from tasks.core.state import home

NAMESPACE = "adaptrail"
_MAGIC = b"SSHSIG"
_HASH = "sha512"
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", buf[at:at + 4])
    if at + 4 + n > len(buf):
        raise ValueError("truncated")
    return buf[at + 4:at + 4 + n], at + 4 + n


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _wire(public: Ed25519PublicKey) -> bytes:
    """The SSH wire encoding of the public key (what ``ssh-ed25519 AAAA...`` base64-encodes)."""
    return _string(b"ssh-ed25519") + _string(_raw(public))


def key_id(public: Ed25519PublicKey) -> str:
    """``SHA256:<base64>``: the fingerprint ``ssh-keygen -l`` prints for this key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(_wire(public)).digest()).decode().rstrip("=")


def public_line(public: Ed25519PublicKey, comment: str = "") -> str:
    line = "ssh-ed25519 " + base64.b64encode(_wire(public)).decode()
    return f"{line} {comment}".strip()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """An ``ssh-ed25519 AAAA... [comment]`` line or a PEM public key; a clear error for anything else."""
    text = text.strip()
    try:
        key = (serialization.load_pem_public_key(text.encode()) if text.startswith("-----BEGIN")
               else serialization.load_ssh_public_key(" ".join(text.split()[:2]).encode()))
    except (ValueError, IndexError, TypeError) as e:
        raise InputError(f"not a public key: {text[:40]!r}...; give an `ssh-ed25519 AAAA...` line (the .pub file of "
                         "`adaptrail keygen` or `ssh-keygen -t ed25519`)") from e
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"only ed25519 keys are accepted, got {type(key).__name__}; create one with "
                         "`adaptrail keygen NAME` or `ssh-keygen -t ed25519`")
    return key


@dataclass(frozen=True)
class Signer:
    """A private key in memory: signs statements in the ``adaptrail`` namespace."""

    private: Ed25519PrivateKey
    source: str = ""

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> str:
        """One base64 line: the SSHSIG blob ``ssh-keygen -Y sign -n adaptrail`` would produce for ``message``."""
        signed = _signed_data(message)
        sig = _string(b"ssh-ed25519") + _string(self.private.sign(signed))
        blob = (_MAGIC + struct.pack(">I", 1) + _string(_wire(self.public)) + _string(NAMESPACE.encode())
                + _string(b"") + _string(_HASH.encode()) + _string(sig))
        return base64.b64encode(blob).decode()


def _signed_data(message: bytes) -> bytes:
    return (_MAGIC + _string(NAMESPACE.encode()) + _string(b"") + _string(_HASH.encode())
            + _string(hashlib.sha512(message).digest()))


def signature_key(signature: str) -> Ed25519PublicKey:
    """The public key a signature says it was made with (checked against the policy before it is trusted)."""
    blob = _decode(signature)
    key_wire, _ = _read_string(blob, len(_MAGIC) + 4)
    kind, at = _read_string(key_wire, 0)
    raw, _ = _read_string(key_wire, at)
    if kind != b"ssh-ed25519" or len(raw) != 32:
        raise ValueError("not an ssh-ed25519 signature")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_problem(public: Ed25519PublicKey, message: bytes, signature: str) -> str:
    """'' when ``signature`` (one line or armored) is a valid ``adaptrail`` signature of ``message`` by ``public``."""
    try:
        blob = _decode(signature)
        if blob[:6] != _MAGIC or struct.unpack(">I", blob[6:10])[0] != 1:
            return "not an SSH signature (SSHSIG v1)"
        key_wire, at = _read_string(blob, 10)
        namespace, at = _read_string(blob, at)
        _reserved, at = _read_string(blob, at)
        hash_alg, at = _read_string(blob, at)
        sig, _ = _read_string(blob, at)
        if key_wire != _wire(public):
            return f"made with key {key_id(signature_key(signature))}, not {key_id(public)}"
        if namespace != NAMESPACE.encode():
            return f"made for namespace {namespace.decode(errors='replace')!r}, not {NAMESPACE!r} (ssh-keygen -n adaptrail)"
        kind, at = _read_string(sig, 0)
        raw_sig, _ = _read_string(sig, at)
        if kind != b"ssh-ed25519":
            return "not an ed25519 signature"
        if hash_alg not in (b"sha512", b"sha256"):
            return f"unsupported hash {hash_alg.decode(errors='replace')!r}"
        digest = hashlib.new(hash_alg.decode(), message).digest()
        public.verify(raw_sig, _MAGIC + _string(namespace) + _string(b"") + _string(hash_alg) + _string(digest))
    except InvalidSignature:
        return "the signature does not match the statement (statement changed, or signed by another key)"
    except (ValueError, TypeError, AttributeError, struct.error):
        return "the signature is malformed (paste the whole line `adaptrail sign` printed)"
    return ""


def _decode(signature: str) -> bytes:
    text = signature.strip()
    if text.startswith(_ARMOR[0]):
        text = text.replace(_ARMOR[0], "").replace(_ARMOR[1], "")
    return base64.b64decode("".join(text.split()), validate=True)


def load_signer(path: str | Path) -> Signer:
    """A private key file: OpenSSH (``ssh-keygen -t ed25519``) or PKCS#8 PEM, unencrypted."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"private key file not found: {p}; create one with `adaptrail keygen NAME` (or pass --key)")
    data = p.read_bytes()
    try:
        key = (serialization.load_ssh_private_key(data, password=None) if b"OPENSSH PRIVATE KEY" in data
               else serialization.load_pem_private_key(data, password=None))
    except (ValueError, TypeError) as e:
        raise InputError(f"cannot read the private key {p} ({e}); a key with a passphrase or in ssh-agent signs "
                         "through `ssh-keygen -Y sign -n adaptrail -f KEY FILE` (see `adaptrail sign --help`)") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{p} is not an ed25519 key; create one with `adaptrail keygen NAME` or ssh-keygen -t ed25519")
    return Signer(key, str(p))


def keygen(path: str | Path, comment: str) -> Signer:
    """Write a new key pair: ``path`` (OpenSSH private key, owner-only) and ``path.pub`` (one ``ssh-ed25519`` line)."""
    private_path = Path(path).expanduser()
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise InputError(f"{p} exists; refusing to overwrite a key (move it away or pick another name)")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    public_path.write_text(public_line(key.public_key(), comment) + "\n", encoding="utf-8")
    return Signer(key, str(private_path))


ENV_SERVICE_KEY = "ADAPTRAIL_SERVICE_KEY"


def service_key_path() -> Path:
    return Path(os.environ.get(ENV_SERVICE_KEY) or home() / "keys" / "service").expanduser()


def service_signer(create: bool = True) -> Signer | None:
    """The pipeline's own key (``ADAPTRAIL_SERVICE_KEY``, default ``$ADAPTRAIL_HOME/keys/service``), created on
    first use where it is the default path; None when absent and ``create`` is False."""
    path = service_key_path()
    if path.is_file():
        return load_signer(path)
    if not create:
        return None
    if os.environ.get(ENV_SERVICE_KEY):
        raise InputError(f"{ENV_SERVICE_KEY}={path} does not exist; mount the service key there (team deployment) "
                         "or unset it to use $ADAPTRAIL_HOME/keys/service")
    return keygen(path, "adaptrail-service")
