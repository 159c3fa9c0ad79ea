"""Verified loading on a real (tiny) LoRA adapter: every check must pass before base + adapter are loaded."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from tests.builders import setup_people, tamper_sqlite
import torch

from tasks.core import state
from tasks.governance import approvals, attestation
from tasks.governance import loader
from tasks.governance import registry
from tasks.training.adapter_files import save_adapter
from tasks.core.config import ModelConfig
from tasks.core.peft_config import PeftConfig
from tasks.core.errors import EXIT_REFUSED, InputError
from tasks.gates.evaluation import predict_proba
from tasks.governance.loader import LoadRefused
from tasks.training.model import load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft
from tasks.core.names import ALIAS_CHAMPION, GATES, Tag
from tasks.governance.ledger import Ledger
from tasks.training.tiny_model import build_tiny_bert

MODEL = "router"
LABELS = ["billing", "tech"]
TEXTS = ["refund my invoice please", "the app crashes on start", "charged twice this month", "login page is broken"]
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny base and a LoRA adapter for it, saved the way the train step saves it; plus its in-memory model."""
    base = resolve_base_model(ModelConfig(base=str(build_tiny_bert(tmp_path_factory.mktemp("base"), TEXTS))))
    torch.manual_seed(0)
    model, fresh = load_classifier(base, ModelConfig(base=base.path), LABELS)
    model = wrap_with_peft(model, PeftConfig(r=2), "sequence_classification", fresh)
    model.eval()
    adapter_dir = tmp_path_factory.mktemp("adapter") / "adapter"
    meta = {"task": "sequence_classification", "labels": LABELS, "max_length": 32, "base_model": base.to_dict(),
            "trust_remote_code": False}
    digest = save_adapter(model, adapter_dir, meta)
    proba = predict_proba(model, load_tokenizer(base, ModelConfig(base=base.path)), TEXTS, 32)
    return {"base": base, "dir": adapter_dir, "digest": digest, "proba": proba}


P: dict = {}  # name -> Signer, set per test


@pytest.fixture
def home(home):
    """A state directory with a signed policy (tests.builders.setup_people) and everyone's keys in ``P``."""
    P.clear()
    P.update(setup_people(home))
    return home


def register(trained, approve: bool = True, base_digest: str | None = None, at: datetime = NOW) -> str:
    """Log the adapter to a run, register it with the flow's tags and ledger event, and (by default) approve it."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    registry.log_path(c, run_id, trained["dir"], "adapter")
    signature = attestation.sign_and_log(c, run_id, trained["dir"], state.home() / "work" / run_id)  # as the step
    gates = {g: "passed" for g in GATES}
    base = trained["base"]
    tags = {Tag.APPROVAL_STATUS: "pending", Tag.APPROVAL_BY: "adaptrail/gates",
            Tag.APPROVAL_AT: at.isoformat(timespec="seconds"), Tag.APPROVAL_REASON: "registered",
            Tag.REVIEW_DUE: "2099-01-01", Tag.REQUESTED_BY: "carol", Tag.ADAPTER_DIGEST: trained["digest"],
            Tag.BASE_MODEL: base.id, Tag.BASE_MODEL_REVISION: base.revision,
            Tag.BASE_MODEL_DIGEST: base_digest or base.digest, Tag.DATASET_DIGEST: "d" * 64} | \
        {Tag.gate(g): o for g, o in gates.items()}
    mv = registry.register_version(c, MODEL, run_id, registry.artifact_uri(c, run_id, "adapter"), tags)
    approvals.record_registration(MODEL, mv.version, "pending", gates, {"gates": gates}, "carol", now=at,
                                  signature=signature)
    if approve:
        approvals.approve(MODEL, mv.version, P["alice"], "good", now=at)
    return str(mv.version)


def stored_adapter(version: str) -> Path:
    return registry.local_path_of(registry.client().get_model_version(MODEL, version).source)


def failed(report) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


def test_an_approved_adapter_verifies_and_predicts_like_the_trained_model(home, trained):
    v = register(trained)
    report = loader.verify(f"models:/{MODEL}@{ALIAS_CHAMPION}")
    assert report.ok, report.to_text()
    assert report.version == v and [c.name for c in report.checks] == ["ledger", "signature", "tags", "approval",
                                                                       "adapter", "model_signing", "base_model"]
    out = loader.predict(f"{MODEL}@{ALIAS_CHAMPION}", TEXTS)
    assert [o["label"] for o in out] == [LABELS[i] for i in trained["proba"].argmax(1)]
    np.testing.assert_allclose([[o["scores"][l] for l in LABELS] for o in out], trained["proba"], atol=1e-5)
    assert all(o["proba"] == max(o["scores"].values()) for o in out)


def test_a_flipped_byte_in_an_adapter_file_is_refused(home, trained):
    v = register(trained)
    weights = stored_adapter(v) / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    report = loader.verify(f"{MODEL}/{v}")
    assert set(failed(report)) == {"adapter", "model_signing"}  # the manifest, and the library's own verifier
    assert "file adapter_model.safetensors changed" in failed(report)["adapter"]
    assert "Hash mismatch for 'adapter_model.safetensors'" in failed(report)["model_signing"]
    with pytest.raises(LoadRefused, match="adapter digest mismatch") as info:
        loader.predict(f"{MODEL}@{ALIAS_CHAMPION}", TEXTS)
    assert info.value.exit_code == EXIT_REFUSED  # a refusal, not a typo


def test_an_edited_manifest_and_tag_do_not_hide_a_swapped_adapter(home, trained):
    """Rewriting the manifest and adapter.digest together still disagrees with the digest the ledger recorded."""
    from tasks.training.adapter_files import write_manifest

    v = register(trained)
    folder = stored_adapter(v)
    (folder / "adaptrail.json").write_text('{"labels": ["billing", "tech"], "max_length": 32}\n')
    new_digest = write_manifest(folder)
    registry.client().set_model_version_tag(MODEL, v, Tag.ADAPTER_DIGEST, new_digest)
    problems = failed(loader.verify(f"{MODEL}/{v}"))
    assert {"tags", "adapter"} <= set(problems) and Tag.ADAPTER_DIGEST in problems["tags"]


def test_a_different_base_model_is_refused(home, trained):
    v = register(trained, base_digest="0" * 64)
    with pytest.raises(LoadRefused, match="base mismatch: .* the adapter was trained on 0000"):
        loader.load_verified(f"{MODEL}/{v}")


def test_a_ledger_row_edited_in_the_database_is_named(home, trained):
    v = register(trained)
    tamper_sqlite(home / "ledger.db", "UPDATE approval_ledger SET reason = 'approved by the board' WHERE seq = 2")
    problems = failed(loader.verify(f"{MODEL}/{v}"))
    assert {"ledger", "signature"} <= set(problems) and problems["ledger"].startswith("row seq=2:")
    assert "seq 2 (registered) does not count: its signature does not verify" in problems["signature"]
    with pytest.raises(LoadRefused, match="ledger problem: row seq=2"):
        loader.predict(f"{MODEL}/{v}", TEXTS)


def test_tags_changed_by_hand_are_refused(home, trained):
    v = register(trained, approve=False)
    registry.client().set_model_version_tag(MODEL, v, Tag.APPROVAL_STATUS, "approved")
    problems = failed(loader.verify(f"{MODEL}/{v}"))
    assert set(problems) == {"tags", "approval"}  # the ledger, not the tag, decides: still pending
    assert problems["approval"] == "not approved: status is pending"


def test_an_expired_approval_is_refused_by_predict(home, trained):
    register(trained, at=NOW - timedelta(days=183))  # approved half a year ago: the review is overdue today
    with pytest.raises(LoadRefused, match="expired: review was due"):
        loader.predict(f"{MODEL}@{ALIAS_CHAMPION}", TEXTS)
    approvals.expire_overdue(MODEL)  # as the audit records it, today
    with pytest.raises(LoadRefused, match="expired"):
        loader.predict(f"{MODEL}@{ALIAS_CHAMPION}", TEXTS)


def test_an_approval_from_before_signing_loads_only_once_re_reviewed(state_home, trained):
    """Migration: a ledger written before signing keeps its events (unsigned); once a policy is applied, an approval
    recorded unsigned is refused for loading until someone re-reviews it with their key."""
    state_home.mkdir(parents=True, exist_ok=True)
    v = register(trained, approve=False)  # no policy yet: the registration is recorded unsigned
    with Ledger() as led:  # an approval as the previous release wrote it: no signature
        led.append(MODEL, v, "approved", "alice", "good", extra={"tags": {
            Tag.APPROVAL_STATUS: "approved", Tag.APPROVAL_BY: "alice", Tag.APPROVAL_AT: "2026-01-01T00:00:00+00:00",
            Tag.APPROVAL_REASON: "good", Tag.REVIEW_DUE: "2099-01-01"}})
    approvals.reconcile(MODEL, v)
    P.update(setup_people(state_home, at=datetime.now(timezone.utc)))
    refusal = failed(loader.verify(f"{MODEL}/{v}"))
    assert set(refusal) == {"signature"} and "was recorded before signing; re-review it" in refusal["signature"]
    approvals.review(MODEL, v, P["bob"], "re-checked after the move to signed decisions")
    assert loader.verify(f"{MODEL}/{v}").ok


def test_no_champion_and_not_approved_are_refused(home, trained):
    with pytest.raises(InputError, match="has no alias 'champion'"):
        loader.verify(f"{MODEL}@{ALIAS_CHAMPION}")
    v = register(trained, approve=False)
    with pytest.raises(LoadRefused, match="not approved: status is pending"):
        loader.predict(f"{MODEL}/{v}", TEXTS)


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("router/3", ("router", "3", None)),
        ("router@champion", ("router", None, "champion")),
        ("models:/router@champion", ("router", None, "champion")),
        ("models:/router/12", ("router", "12", None)),
    ],
)
def test_references(ref, parsed):
    assert loader.parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["router", "router/latest", "models:/@champion", "router@"])
def test_bad_references_name_the_forms(ref):
    with pytest.raises(InputError, match="MODEL/VERSION, MODEL@alias"):
        loader.parse_ref(ref)


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("true", False), (1, False), (True, True)])
def test_trust_remote_code_only_when_the_metadata_says_exactly_true(value, expected):
    meta = {"labels": LABELS} if value is None else {"labels": LABELS, "trust_remote_code": value}
    assert loader._model_config("base", None, meta).trust_remote_code is expected


def test_cli_verify_and_predict(home, trained, capsys, cli, tmp_path):
    v = register(trained)
    assert cli(["verify", MODEL, f"@{ALIAS_CHAMPION}"]) == 0
    assert f"{MODEL} v{v} ({MODEL}@{ALIAS_CHAMPION}): verified" in capsys.readouterr().out
    assert cli(["predict", f"{MODEL}@{ALIAS_CHAMPION}", *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[2] for line in lines] == TEXTS[:2] and lines[0].split("\t")[0] in LABELS
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:3]) + "\n\n", encoding="utf-8")
    assert cli(["predict", f"{MODEL}@{ALIAS_CHAMPION}", "--file", str(texts)]) == 0
    captured = capsys.readouterr()
    assert [line.split("\t")[2] for line in captured.out.strip().splitlines()] == TEXTS[:3]
    assert "You should probably TRAIN" not in captured.err  # predict is quiet
    with texts.open(encoding="utf-8") as stdin, pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.stdin", stdin)
        assert cli(["predict", f"{MODEL}@{ALIAS_CHAMPION}", "-"]) == 0  # `-` reads stdin, not the text "-"
    assert [line.split("\t")[2] for line in capsys.readouterr().out.strip().splitlines()] == TEXTS[:3]
    (stored_adapter(v) / "adaptrail.json").write_text("{}")
    assert cli(["verify", MODEL, v]) == EXIT_REFUSED
    assert "[FAIL] adapter: file adaptrail.json changed" in capsys.readouterr().out
    assert cli(["predict", f"{MODEL}@{ALIAS_CHAMPION}", "hello"]) == EXIT_REFUSED
    assert "refusing to load" in capsys.readouterr().err
