"""Ed25519 and ECDSA P-256 keys and signatures in the SSH formats engineers already use (``ssh-keygen``, git commit
signing).

A key is named by its SHA256 fingerprint, exactly as ``ssh-keygen -lf KEY.pub`` prints it (``SHA256:...``). A
signature is an SSHSIG blob in the namespace ``adaptrail``: ``adaptrail sign`` writes it as one base64 line (easy to
paste into a form), and ``ssh-keygen -Y sign -n adaptrail -f ~/.ssh/id_ed25519 FILE`` writes the same blob armored;
both are accepted. So a key kept in ssh-agent or behind a passphrase works through ``ssh-keygen``.

Private keys: OpenSSH (``ssh-keygen -t ed25519`` or ``-t ecdsa -b 256``) or PKCS#8 PEM, unencrypted. Public keys: an
``ssh-ed25519 AAAA...`` / ``ecdsa-sha2-nistp256 AAAA...`` line (``KEY.pub``, an ``allowed_signers`` entry without its
principal) or PEM. People may hold either type; the pipeline's service key is ECDSA P-256 because it also signs the
adapter's OpenSSF model-signing bundle, and that library accepts only NIST curves (``attestation.py``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from tasks.core.errors import InputError
from tasks.core.state import home

NAMESPACE = "adaptrail"
_MAGIC = b"SSHSIG"
_HASH = "sha512"
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
ED25519, ECDSA_P256 = "ssh-ed25519", "ecdsa-sha2-nistp256"
#: ``keygen`` kinds (as ``ssh-keygen -t`` names them; ecdsa is always P-256 here).
KeyKind = Literal["ed25519", "ecdsa"]
#: The pipeline's service key type: it also signs the model-signing bundle, which takes EC keys only.
SERVICE_KEY_KIND: KeyKind = "ecdsa"
PublicKey = Union[Ed25519PublicKey, ec.EllipticCurvePublicKey]
PrivateKey = Union[Ed25519PrivateKey, ec.EllipticCurvePrivateKey]
_ACCEPTED = "an `ssh-ed25519 AAAA...` or `ecdsa-sha2-nistp256 AAAA...` line"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _read_string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise ValueError("truncated")
    (n,) = struct.unpack(">I", buf[at:at + 4])
    if at + 4 + n > len(buf):
        raise ValueError("truncated")
    return buf[at + 4:at + 4 + n], at + 4 + n


def _mpint(n: int) -> bytes:
    """An SSH mpint (non-negative): big-endian, minimal, a leading zero byte when the top bit is set."""
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return _string(b"\0" + raw if raw and raw[0] & 0x80 else raw)


def _read_mpint(buf: bytes, at: int) -> tuple[int, int]:
    raw, at = _read_string(buf, at)
    return int.from_bytes(raw, "big"), at


def key_type(public: PublicKey) -> str:
    """``ssh-ed25519`` or ``ecdsa-sha2-nistp256`` (the SSH name of the key's algorithm)."""
    if isinstance(public, Ed25519PublicKey):
        return ED25519
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return ECDSA_P256
    raise ValueError(f"unsupported key {type(public).__name__}")


_WIRES: dict[int, tuple[PublicKey, bytes]] = {}  # id(key) -> (the key, its wire): a ledger read asks per event


def _wire(public: PublicKey) -> bytes:
    """The SSH wire encoding of the public key (what ``ssh-ed25519 AAAA...`` base64-encodes)."""
    hit = _WIRES.get(id(public))
    if hit is not None and hit[0] is public:
        return hit[1]
    key_type(public)
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    wire = base64.b64decode(line.split()[1])
    if len(_WIRES) >= 1024:
        _WIRES.clear()
    _WIRES[id(public)] = (public, wire)  # holding the key keeps its id from being reused
    return wire


@functools.lru_cache(maxsize=256)
def _from_wire(wire: bytes) -> PublicKey:
    """The key of an SSH wire encoding (cached: the same few keys sign every event; keys are immutable)."""
    kind, _ = _read_string(wire, 0)
    if kind not in (ED25519.encode(), ECDSA_P256.encode()):
        raise ValueError(f"unsupported key type {kind[:40]!r}")
    key = serialization.load_ssh_public_key(kind + b" " + base64.b64encode(wire))
    key_type(key)
    return key


def key_id(public: PublicKey) -> str:
    """``SHA256:<base64>``: the fingerprint ``ssh-keygen -l`` prints for this key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(_wire(public)).digest()).decode().rstrip("=")


def public_line(public: PublicKey, comment: str = "") -> str:
    line = key_type(public) + " " + base64.b64encode(_wire(public)).decode()
    return f"{line} {comment}".strip()


def public_pem(public: PublicKey) -> str:
    """The key as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo): what ``model_signing verify key --public_key`` reads."""
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def parse_public_key(text: str) -> PublicKey:
    """An ``ssh-ed25519`` / ``ecdsa-sha2-nistp256 AAAA... [comment]`` line or a PEM public key; a clear error for
    anything else."""
    text = text.strip()
    try:
        key = (serialization.load_pem_public_key(text.encode()) if text.startswith("-----BEGIN")
               else serialization.load_ssh_public_key(" ".join(text.split()[:2]).encode()))
    except (ValueError, IndexError, TypeError) as e:
        raise InputError(f"not a public key: {text[:40]!r}...; give {_ACCEPTED} (the .pub file of "
                         "`adaptrail keygen` or `ssh-keygen -t ed25519`)") from e
    try:
        key_type(key)
    except ValueError:
        raise InputError(f"only ed25519 and ecdsa P-256 keys are accepted, got {_describe(key)}; create one with "
                         "`adaptrail keygen NAME` or `ssh-keygen -t ed25519`") from None
    return key


def _describe(key: object) -> str:
    curve = getattr(key, "curve", None)
    return f"{type(key).__name__} ({curve.name})" if curve is not None else type(key).__name__


@dataclass(frozen=True)
class Signer:
    """A private key in memory: signs statements in the ``adaptrail`` namespace."""

    private: PrivateKey
    source: str = ""

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    @property
    def kind(self) -> str:
        """``ssh-ed25519`` or ``ecdsa-sha2-nistp256``."""
        return key_type(self.public)

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, message: bytes) -> str:
        """One base64 line: the SSHSIG blob ``ssh-keygen -Y sign -n adaptrail`` would produce for ``message``."""
        signed = _signed_data(message)
        if isinstance(self.private, Ed25519PrivateKey):
            raw = self.private.sign(signed)
        else:  # RFC 5656: the ECDSA signature is (mpint r, mpint s), over SHA-256 for nistp256
            r, s = decode_dss_signature(self.private.sign(signed, ec.ECDSA(hashes.SHA256())))
            raw = _mpint(r) + _mpint(s)
        sig = _string(self.kind.encode()) + _string(raw)
        blob = (_MAGIC + struct.pack(">I", 1) + _string(_wire(self.public)) + _string(NAMESPACE.encode())
                + _string(b"") + _string(_HASH.encode()) + _string(sig))
        return base64.b64encode(blob).decode()


def _signed_data(message: bytes) -> bytes:
    return (_MAGIC + _string(NAMESPACE.encode()) + _string(b"") + _string(_HASH.encode())
            + _string(hashlib.sha512(message).digest()))


def signature_key(signature: str) -> PublicKey:
    """The public key a signature says it was made with (checked against the policy before it is trusted)."""
    blob = _decode(signature)
    key_wire, _ = _read_string(blob, len(_MAGIC) + 4)
    try:
        return _from_wire(key_wire)
    except (ValueError, TypeError, struct.error) as e:
        raise ValueError(f"not an ssh-ed25519 or ecdsa-sha2-nistp256 signature ({e})") from None


_CHECKED: dict[tuple[bytes, bytes, str], str] = {}  # (key, sha256 of message, signature) -> signature_problem's answer
_CHECKED_MAX = 1 << 16


def signature_problem(public: PublicKey, message: bytes, signature: str) -> str:
    """'' when ``signature`` (one line or armored) is a valid ``adaptrail`` signature of ``message`` by ``public``.
    A pure check, remembered per process: a ledger read checks every event's signature, and the next read in the
    same process (a warm ``verify``) does not repeat the cryptography for the same key, message and signature."""
    try:
        memo = (_wire(public), hashlib.sha256(message).digest(), signature)
    except (ValueError, TypeError, AttributeError):
        return _signature_problem(public, message, signature)
    answer = _CHECKED.get(memo)
    if answer is None:
        answer = _signature_problem(public, message, signature)
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED[memo] = answer
    return answer


def _signature_problem(public: PublicKey, message: bytes, signature: str) -> str:
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
        if kind != key_type(public).encode():
            return f"not an {key_type(public)} signature"
        if hash_alg not in (b"sha512", b"sha256"):
            return f"unsupported hash {hash_alg.decode(errors='replace')!r}"
        digest = hashlib.new(hash_alg.decode(), message).digest()
        signed = _MAGIC + _string(namespace) + _string(b"") + _string(hash_alg) + _string(digest)
        if isinstance(public, Ed25519PublicKey):
            public.verify(raw_sig, signed)
        else:
            r, at = _read_mpint(raw_sig, 0)
            s, at = _read_mpint(raw_sig, at)
            if at != len(raw_sig):
                raise ValueError("trailing bytes")
            public.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
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
    """A private key file: OpenSSH (``ssh-keygen -t ed25519`` / ``-t ecdsa -b 256``) or PKCS#8 PEM, unencrypted."""
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
    try:
        key_type(key.public_key())
    except (ValueError, AttributeError):
        raise InputError(f"{p} is a {_describe(key)} key, not ed25519 or ecdsa P-256; create one with `adaptrail "
                         "keygen NAME` or ssh-keygen -t ed25519") from None
    return Signer(key, str(p))


def keygen(path: str | Path, comment: str, kind: KeyKind = "ed25519") -> Signer:
    """Write a new key pair: ``path`` (OpenSSH private key, owner-only) and ``path.pub`` (one ``ssh-ed25519`` or
    ``ecdsa-sha2-nistp256`` line)."""
    private_path = Path(path).expanduser()
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists():
            raise InputError(f"{p} exists; refusing to overwrite a key (move it away or pick another name)")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    if kind not in ("ed25519", "ecdsa"):
        raise InputError(f"key type {kind!r} is not supported; use ed25519 or ecdsa (P-256)")
    key = Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                  serialization.NoEncryption()))
    public_path.write_text(public_line(key.public_key(), comment) + "\n", encoding="utf-8")
    return Signer(key, str(private_path))


ENV_SERVICE_KEY = "ADAPTRAIL_SERVICE_KEY"


def service_key_path() -> Path:
    return Path(os.environ.get(ENV_SERVICE_KEY) or home() / "keys" / "service").expanduser()


def service_key_problem(signer: Signer) -> str:
    """'' when ``signer`` can be the pipeline's key (ECDSA P-256: it also makes the adapter's model-signing bundle),
    else why not and the rotation that fixes it."""
    if signer.kind == ECDSA_P256:
        return ""
    old = signer.source or str(service_key_path())
    return (f"the pipeline's service key {old} is {signer.kind} ({signer.key_id}); the adapter's OpenSSF "
            f"model-signing bundle needs an ECDSA P-256 key. Rotate it: `mv {old} {old}.old && mv {old}.pub "
            f"{old}.old.pub`, `adaptrail keygen service --type ecdsa --out {old}`, then an admin runs `adaptrail "
            f"policy add pipeline --role service --pubkey {old}.pub --key ADMIN_KEY` and `adaptrail policy "
            f"revoke-key pipeline {signer.key_id} --key ADMIN_KEY` (its earlier signatures still count)")


def service_signer(create: bool = True) -> Signer | None:
    """The pipeline's own key (``ADAPTRAIL_SERVICE_KEY``, default ``$ADAPTRAIL_HOME/keys/service``), created on
    first use where it is the default path (ECDSA P-256: it also signs the model-signing bundle); None when absent
    and ``create`` is False."""
    path = service_key_path()
    if path.is_file():
        return load_signer(path)
    if not create:
        return None
    if os.environ.get(ENV_SERVICE_KEY):
        raise InputError(f"{ENV_SERVICE_KEY}={path} does not exist; mount the service key there (team deployment) "
                         "or unset it to use $ADAPTRAIL_HOME/keys/service")
    return keygen(path, "adaptrail-service", SERVICE_KEY_KIND)
