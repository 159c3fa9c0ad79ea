"""The adapter's artifact signature: an OpenSSF model-signing bundle made with the pipeline's ECDSA P-256 service key
(tasks/governance/attestation.py), checked by the library's own verifier in `adaptrail verify` and the audit, and by
anyone with the library's CLI; and the ECDSA keys in the SSH formats ssh-keygen uses (tasks/governance/keys.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tasks.core import state
from tasks.core.errors import EXIT_OK, EXIT_REFUSED, InputError
from tasks.core.names import ADAPTER_MANIFEST, GATES, Tag
from tasks.governance import approvals, attestation, audit, keys, loader, policy_admin, registry, trust
from tasks.governance.ledger import Ledger
from tasks.training.adapter_files import file_map, write_manifest
from tests.builders import setup_people

MODEL = "signed-router"
SSH_KEYGEN = shutil.which("ssh-keygen")
MODEL_SIGNING_CLI = Path(sys.executable).with_name("model_signing")
P: dict = {}


BASE: dict = {}


@pytest.fixture
def home(home, tiny_bert):
    P.clear()
    P.update(setup_people(home))
    if not BASE:  # a real base model on disk, so a version can pass every check of `adaptrail verify`
        from tasks.core.config import ModelConfig
        from tasks.training.model import resolve_base_model

        BASE["ref"] = resolve_base_model(ModelConfig(base=str(tiny_bert)))
    return home


def fake_adapter(folder: Path, seed: int) -> Path:
    """A small adapter folder with a real manifest (the bundle does not care what the weights mean)."""
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(bytes((seed * 7 + i) % 256 for i in range(4096)))
    (folder / "adaptrail.json").write_text(json.dumps({"labels": ["a", "b"], "seed": seed}))
    write_manifest(folder)
    return folder


def register(folder: Path, *, sign: bool = True, approve: bool = True) -> tuple[str, str]:
    """A version registered the way the register step does it: adapter logged, bundle signed and logged on the
    run, the version created, the ledger's `registered` event recording the bundle. Returns (version, run id)."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    registry.log_path(c, run_id, folder, "adapter")
    signature = attestation.sign_and_log(c, run_id, folder, state.home() / "work" / run_id) if sign else None
    digest = json.loads((folder / ADAPTER_MANIFEST).read_text())["digest"]
    base = BASE["ref"]
    tags = {Tag.REQUESTED_BY: "carol", Tag.ADAPTER_DIGEST: digest, Tag.BASE_MODEL: base.id,
            Tag.BASE_MODEL_DIGEST: base.digest, Tag.BASE_MODEL_REVISION: base.revision, Tag.DATASET_DIGEST: "d" * 64,
            Tag.CODE_VERSION: "abc123", Tag.FLOW_RUN_ID: "flow-1"} | {Tag.gate(g): "passed" for g in GATES}
    mv = registry.register_version(c, MODEL, run_id, registry.artifact_uri(c, run_id, "adapter"), tags)
    gates = {g: "passed" for g in GATES}
    approvals.record_registration(MODEL, mv.version, "pending", gates, {"gates": gates}, "carol",
                                  signature=signature)
    if approve:
        approvals.approve(MODEL, mv.version, P["alice"], "good")
    return str(mv.version), run_id


def stored_adapter(version: str) -> Path:
    return registry.local_path_of(registry.client().get_model_version(MODEL, version).source)


def stored_bundle(run_id: str) -> Path:
    c = registry.client()
    return registry.local_path_of(registry.artifact_uri(c, run_id, attestation.BUNDLE_PATH))


def registered_event(version: str):
    with Ledger() as led:
        own = trust.read(led).events(model=MODEL, version=version)
    return next(e for e in own if e.action == "registered"), own


def model_signing_check(version: str) -> loader.Check:
    report = loader.verify(f"{MODEL}/{version}")
    return next(c for c in report.checks if c.name == "model_signing")


def signing_findings(version: str) -> list[tuple[str, str, str]]:
    found = audit.collect(model=MODEL)
    audit.assess(found)
    return [(f.severity, f.code, f.message) for f in found.findings
            if f.version == version and f.code.startswith("adapter-")]


def all_files(folder: Path) -> dict[str, str]:
    manifest = hashlib.sha256((folder / ADAPTER_MANIFEST).read_bytes()).hexdigest()
    return file_map(folder) | {ADAPTER_MANIFEST: manifest}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test (no Sigstore, Rekor, Fulcio or TUF fetch)."""
    def refuse(self, address, *a, **k):
        raise AssertionError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))


# --- ECDSA P-256 keys in the SSH formats -------------------------------------------------------------------


def test_new_service_keys_are_p256_and_people_keep_ed25519(home):
    assert P["pipeline"].kind == keys.ECDSA_P256 and P["alice"].kind == keys.ED25519
    assert (home / "keys" / "service.pub").read_text().startswith("ecdsa-sha2-nistp256 AAAA")
    assert b"OPENSSH PRIVATE KEY" in (home / "keys" / "service").read_bytes()
    assert (home / "keys" / "service").stat().st_mode & 0o077 == 0  # owner-only


def test_the_remembered_checks_never_let_a_changed_message_key_or_signature_through(tmp_path):
    # signature_problem remembers its answers per process (a warm verify); an insider who replays a signature that
    # was checked once onto an edited statement, another key or an edited signature must still be refused
    signer, other = keys.keygen(tmp_path / "a", "a"), keys.keygen(tmp_path / "b", "b", "ecdsa")
    message, sig = b"approved v3", signer.sign(b"approved v3")
    for _ in range(2):  # the second round is answered from memory
        assert keys.signature_problem(signer.public, message, sig) == ""
        assert keys.signature_problem(signer.public, b"approved v4", sig)
        assert keys.signature_problem(other.public, message, sig)
        tampered = sig[:40] + ("A" if sig[40] != "A" else "B") + sig[41:]
        assert keys.signature_problem(signer.public, message, tampered)
    reloaded = keys.load_signer(tmp_path / "a").public  # another object of the same key: the same answer
    assert reloaded is not signer.public and keys.signature_problem(reloaded, message, sig) == ""


def test_an_ecdsa_signature_round_trips_and_rejects_tampering(tmp_path):
    signer = keys.keygen(tmp_path / "svc", "svc", "ecdsa")
    for i in range(40):  # r and s of every length/top bit: the mpint encoding must be exact each time
        message = f"statement {i}".encode()
        sig = signer.sign(message)
        assert keys.signature_problem(signer.public, message, sig) == ""
        assert keys.key_id(keys.signature_key(sig)) == signer.key_id
        assert "does not match" in keys.signature_problem(signer.public, message + b"!", sig)
    other = keys.keygen(tmp_path / "other", "other", "ecdsa")
    assert "made with key" in keys.signature_problem(other.public, b"statement 0", signer.sign(b"statement 0"))
    ed = keys.keygen(tmp_path / "ed", "ed")
    assert keys.signature_problem(ed.public, b"x", signer.sign(b"x"))  # a key of another type never verifies it


def test_pkcs8_pem_ecdsa_keys_load_and_other_curves_are_refused_clearly(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "svc.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    assert keys.load_signer(pem).kind == keys.ECDSA_P256
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(InputError, match="not ed25519 or ecdsa P-256"):
        keys.load_signer(p384)
    line = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    with pytest.raises(InputError, match="only ed25519 and ecdsa P-256"):
        keys.parse_public_key(line)


@pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")
def test_ecdsa_keys_and_signatures_agree_with_ssh_keygen(tmp_path):
    """The key id is what `ssh-keygen -lf` prints; ssh-keygen accepts our SSHSIG and we accept its own."""
    signer = keys.keygen(tmp_path / "svc", "svc", "ecdsa")
    printed = subprocess.run([SSH_KEYGEN, "-lf", str(tmp_path / "svc.pub")], capture_output=True, text=True,
                             check=True).stdout.split()
    assert printed[1] == signer.key_id and printed[-1] == "(ECDSA)"
    message = tmp_path / "statement"
    message.write_bytes(b'{"adaptrail_statement":1}')
    sig = signer.sign(message.read_bytes())
    armored = tmp_path / "statement.sig"
    armored.write_text("-----BEGIN SSH SIGNATURE-----\n" + "\n".join(sig[i:i + 70] for i in range(0, len(sig), 70))
                       + "\n-----END SSH SIGNATURE-----\n")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"pipeline {keys.public_line(signer.public)}\n")
    ok = subprocess.run([SSH_KEYGEN, "-Y", "verify", "-f", str(allowed), "-I", "pipeline", "-n", "adaptrail", "-s",
                         str(armored)], input=message.read_bytes(), capture_output=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([SSH_KEYGEN, "-Y", "verify", "-f", str(allowed), "-I", "pipeline", "-n", "adaptrail", "-s",
                          str(armored)], input=message.read_bytes() + b" ", capture_output=True)
    assert bad.returncode != 0
    armored.unlink()
    subprocess.run([SSH_KEYGEN, "-Y", "sign", "-n", "adaptrail", "-f", str(tmp_path / "svc"), str(message)],
                   capture_output=True, check=True)
    assert keys.signature_problem(signer.public, message.read_bytes(), armored.read_text()) == ""


# --- the bundle --------------------------------------------------------------------------------------------


def test_the_bundle_is_made_offline_and_the_librarys_own_verifier_accepts_it(home, tmp_path, no_network):
    from model_signing import verifying

    folder = fake_adapter(tmp_path / "adapter", 1)
    bundle = attestation.sign(folder, tmp_path / "out" / "adapter.sig", P["pipeline"])
    data = (tmp_path / "out" / "adapter.sig").read_bytes()
    assert bundle.sha256 == hashlib.sha256(data).hexdigest() and bundle.key_id == P["pipeline"].key_id
    assert bundle.files == all_files(folder)  # every adapter file, its manifest included, with its sha256
    assert json.loads(data)["verificationMaterial"]["tlogEntries"] == []  # key mode: no transparency log
    pem = tmp_path / "pipeline.pem"
    pem.write_text(keys.public_pem(P["pipeline"].public))
    verifying.Config().use_elliptic_key_verifier(public_key=pem).verify(folder, tmp_path / "out" / "adapter.sig")
    flip_byte(folder / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="Hash mismatch for 'adapter_model.safetensors'"):
        verifying.Config().use_elliptic_key_verifier(public_key=pem).verify(folder, tmp_path / "out" / "adapter.sig")


def test_an_ed25519_key_cannot_make_a_bundle(home, tmp_path):
    folder = fake_adapter(tmp_path / "adapter", 1)
    with pytest.raises(InputError, match="needs an ECDSA P-256 key"):
        attestation.sign(folder, tmp_path / "adapter.sig", P["alice"])
    assert not (tmp_path / "adapter.sig").exists()


@pytest.mark.skipif(not MODEL_SIGNING_CLI.exists(), reason="the model_signing CLI is not installed")
def test_anyone_can_check_a_registered_version_with_the_librarys_cli(home, tmp_path, cli, capsys):
    v, _ = register(fake_adapter(tmp_path / "adapter", 1))
    capsys.readouterr()
    assert cli(["signing-key", f"{MODEL}/{v}"]) == EXIT_OK
    assert capsys.readouterr().out == keys.public_pem(P["pipeline"].public)  # from the ledger, not a file
    out = tmp_path / "export"
    assert cli(["signing-key", f"{MODEL}/{v}", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    command = printed.strip().splitlines()[-1].split()
    assert command[:3] == ["model_signing", "verify", "key"]
    run = subprocess.run([str(MODEL_SIGNING_CLI), *command[1:]], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Verification succeeded" in run.stdout + run.stderr
    flip_byte(out / "files" / "adapter" / "adapter_model.safetensors")
    run = subprocess.run([str(MODEL_SIGNING_CLI), *command[1:]], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "adapter_model.safetensors" in run.stdout + run.stderr


# --- the ledger records it; decisions reference it ---------------------------------------------------------


def test_the_registration_records_the_bundle_and_decisions_reference_its_digest(home, tmp_path):
    folder = fake_adapter(tmp_path / "adapter", 1)
    v, run_id = register(folder)
    registered, own = registered_event(v)
    record = registered.extra["adapter_signature"]
    assert record["sha256"] == hashlib.sha256(stored_bundle(run_id).read_bytes()).hexdigest()
    assert record["files"] == all_files(folder) and record["key_id"] == P["pipeline"].key_id
    assert keys.key_id(keys.signature_key(registered.extra["signature"])) == record["key_id"]  # one key, one chain
    approved = next(e for e in own if e.action == "approved")
    assert approved.extra["subject"]["adapter_signature"] == record["sha256"]  # what alice signed names the bundle
    check = model_signing_check(v)
    assert check.ok and record["sha256"][:16] in check.detail and P["pipeline"].key_id in check.detail


def test_a_flipped_byte_fails_the_model_signing_check_in_verify_and_audit(home, tmp_path, cli, capsys):
    v, _ = register(fake_adapter(tmp_path / "adapter", 1))
    assert cli(["verify", f"{MODEL}/{v}"]) == EXIT_OK
    flip_byte(stored_adapter(v) / "adapter_model.safetensors")
    capsys.readouterr()
    assert cli(["verify", f"{MODEL}/{v}"]) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert "[FAIL] model_signing: the library's verifier refuses the adapter" in out
    assert "Hash mismatch for 'adapter_model.safetensors'" in out
    findings = signing_findings(v)
    assert ("critical", "adapter-signature") in {(s, c) for s, c, _ in findings}
    assert any("Hash mismatch" in m for s, c, m in findings if c == "adapter-signature")


def test_an_added_file_that_the_manifest_also_lists_is_caught_by_the_bundle(home, tmp_path):
    """An insider who adds a file and rewrites the manifest to list it: the bundle still names the trained files."""
    v, _ = register(fake_adapter(tmp_path / "adapter", 1))
    folder = stored_adapter(v)
    (folder / "extra.safetensors").write_bytes(b"\0" * 64)
    write_manifest(folder)
    check = model_signing_check(v)
    assert not check.ok and "extra.safetensors" in check.detail


def test_a_bundle_re_signed_with_another_ec_key_is_refused(home, tmp_path):
    """The insider changes the adapter and re-signs it with their own P-256 key: not the key of the registration."""
    v, run_id = register(fake_adapter(tmp_path / "adapter", 1))
    folder = stored_adapter(v)
    flip_byte(folder / "adapter_model.safetensors")
    mallory = keys.keygen(tmp_path / "mallory", "mallory", "ecdsa")
    attestation.sign(folder, stored_bundle(run_id), mallory)
    assert "bundle replaced" in model_signing_check(v).detail
    # and were the digest check ever bypassed, the library refuses the key itself
    assert "Key mismatch" in attestation.verify_problem(folder, stored_bundle(run_id), P["pipeline"].public)
    assert ("critical", "adapter-signature") in {(s, c) for s, c, _ in signing_findings(v)}


def test_a_bundle_swapped_in_from_another_version_is_refused(home, tmp_path):
    v1, run1 = register(fake_adapter(tmp_path / "a1", 1))
    v2, run2 = register(fake_adapter(tmp_path / "a2", 2), approve=False)
    shutil.copyfile(stored_bundle(run1), stored_bundle(run2))
    check = model_signing_check(v2)
    assert not check.ok and "is not the one the registration recorded" in check.detail
    assert model_signing_check(v1).ok


def test_a_missing_bundle_is_refused(home, tmp_path, cli, capsys):
    v, run_id = register(fake_adapter(tmp_path / "adapter", 1))
    stored_bundle(run_id).unlink()
    assert cli(["verify", f"{MODEL}/{v}"]) == EXIT_REFUSED
    assert "[FAIL] model_signing: the bundle signature/adapter.sig is missing" in capsys.readouterr().out
    with pytest.raises(loader.LoadRefused, match="model-signing check failed"):
        loader.load_verified(f"{MODEL}/{v}")
    assert ("critical", "adapter-signature") in {(s, c) for s, c, _ in signing_findings(v)}


def test_a_version_registered_before_bundles_gets_a_clear_note_not_a_crash(home, tmp_path):
    v, _ = register(fake_adapter(tmp_path / "adapter", 1), sign=False)
    check = model_signing_check(v)
    assert check.ok and "registered before model-signing bundles" in check.detail
    assert [(s, c) for s, c, _ in signing_findings(v)] == [("low", "adapter-unsigned")]


def test_a_retried_register_step_reuses_its_bundle(home, tmp_path):
    """The register task retries after a server failure: the bundle an earlier attempt may have recorded stays."""
    folder = fake_adapter(tmp_path / "adapter", 1)
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    first = attestation.sign_and_log(c, run_id, folder, tmp_path / "work")
    again = attestation.sign_and_log(c, run_id, folder, tmp_path / "work")
    assert first == again and hashlib.sha256(stored_bundle(run_id).read_bytes()).hexdigest() == first["sha256"]


# --- an older state directory's ed25519 service key ---------------------------------------------------------


def test_an_old_ed25519_service_key_refuses_to_register_and_names_the_fix(state_home, mlflow_db, tmp_path):
    """No silent fallback to an unsigned adapter: the run is refused before training, naming the rotation; the
    rotation it names then works."""
    state_home.mkdir(parents=True)
    shutil.copy(mlflow_db, state_home / "mlflow.db")
    old = keys.keygen(state_home / "keys" / "service", "adaptrail-service")  # what older versions created
    signers = setup_people(state_home)
    assert signers["pipeline"].kind == keys.ED25519
    with pytest.raises(InputError) as info:
        trust.require_service_key()
    text = str(info.value)
    assert "needs an ECDSA P-256 key" in text and "adaptrail keygen service --type ecdsa" in text
    assert "adaptrail policy add pipeline --role service" in text and f"revoke-key pipeline {old.key_id}" in text
    with pytest.raises(InputError, match="needs an ECDSA P-256 key"):
        attestation.sign_and_log(registry.client(), "unused", fake_adapter(tmp_path / "a", 1), tmp_path / "w")
    assert not (tmp_path / "w" / "signature" / "adapter.sig").exists()

    # the fix, as the message names it
    path = state_home / "keys" / "service"
    path.rename(path.with_name("service.old"))
    path.with_name("service.pub").rename(path.with_name("service.old.pub"))
    from flows.cli import main

    assert main(["keygen", "service", "--type", "ecdsa", "--out", str(path)]) == EXIT_OK
    new = keys.load_signer(path)
    policy_admin.add_person("pipeline", "service", path.with_name("service.pub").read_text(), signers["admin"])
    policy_admin.revoke_key("pipeline", old.key_id, signers["admin"], at=datetime.now(timezone.utc))
    trust.require_service_key()  # now accepted
    assert new.kind == keys.ECDSA_P256
