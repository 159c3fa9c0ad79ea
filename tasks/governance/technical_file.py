"""The technical file of one version (``adaptrail technical-file MODEL/VERSION --out DIR``): a folder and a zip whose
index maps each section of the EU AI Act's Annex IV to the evidence the pipeline recorded, and marks plainly each
item that needs a person's input (what no pipeline can know: the provider, the risk management system, the
declaration of conformity, ...).

The evidence files are copies of what is already recorded — the version run's artifacts (config, validation, reports,
ML-BOM, adapter manifest, signature bundle), the adapter card built now from the same record, the ledger's events
for the model with the chain's status, and the policy pinned in the ledger — nothing is typed here. The folder is
built beside ``DIR`` and renamed into place only when complete, so a failure leaves no half-written file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core.errors import InputError
from tasks.core.names import ARTIFACT_CONFIG, ARTIFACT_REPORTS, ARTIFACT_VALIDATION
from tasks.governance import card as cards
from tasks.governance import registry, trust
from tasks.governance.ledger import Ledger

#: Run artifacts copied into ``evidence/run/`` when the run has them.
RUN_FILES = (ARTIFACT_CONFIG, f"{ARTIFACT_VALIDATION}/decision.json", f"{ARTIFACT_VALIDATION}/validation_result.json",
             *(f"{ARTIFACT_REPORTS}/{n}" for n in (
                 "evaluation.json", "evaluation.md", "bias.json", "bias.md", "regression.json", "regression.md",
                 "gates.json", "gates.md", "mlbom.cdx.json", "dataset.json", "base_model.json", "environment.json")),
             "adapter/manifest.json", "adapter/adapter_config.json", "adapter/adaptrail.json", "signature/adapter.sig")
INDEX_MD, INDEX_JSON = "index.md", "index.json"
NEEDS_INPUT = "NEEDS INPUT"


@dataclass
class Item:
    """One line of a section: what it states, and the evidence files (relative to the folder) or a person's input."""

    what: str
    files: list[str]
    needs_input: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "files": self.files, "needs_input": self.needs_input}


@dataclass
class TechnicalFile:
    folder: Path
    zip_path: Path
    evidence_files: int
    needs_input: list[str]


def _have(present: set[str], *files: str) -> list[str]:
    return [f for f in files if f in present]


def sections(present: set[str], card: cards.Card) -> list[tuple[str, list[Item]]]:
    """Annex IV's sections, each item pointing at evidence files that exist (``present``), or marked as needing a
    person's input."""
    return _description_and_development(present, card) + _control_and_lifecycle(present)


def _person(what: str) -> Item:
    return Item(what, [], True)


def _run(present: set[str], *names: str) -> list[str]:
    return _have(present, *(f"evidence/run/{n}" for n in names))


def _card_files(present: set[str]) -> list[str]:
    return _have(present, "evidence/card/card.md", "evidence/card/card.html")


def _description_and_development(present: set[str], card: cards.Card) -> list[tuple[str, list[Item]]]:
    run = lambda *names: _run(present, *names)  # noqa: E731
    card_files, person = _card_files(present), _person
    missing = [Item(f"the requester's `{m}` (empty on the adapter card)", [], True) for m in card.missing]
    return [
        ("1. General description of the AI system", [
            Item("intended purpose, owner, risk class, users, version (the adapter card)", card_files), *missing,
            Item("software and library versions, hardware it was trained on",
                 run("reports/environment.json", "reports/mlbom.cdx.json")),
            person("the provider's name and contact; how the system is placed on the market or put into service; "
                   "the user interface and the instructions for use given to deployers"),
        ]),
        ("2. Development: pre-trained components, data, design choices, validation", [
            Item("pre-trained base model: id, revision, sha256 of its files, licence",
                 run("reports/base_model.json", "reports/mlbom.cdx.json")),
            Item("method, hyper-parameters and the complete resolved configuration", run("config.yaml",
                                                                                          "adapter/adapter_config.json")),
            Item("the data: source, digests, rows per split and class, group distribution",
                 run("reports/dataset.json") + card_files),
            Item("data validation (Great Expectations): schema, nulls, labels, duplicates, leakage, PII",
                 run("validation/decision.json", "validation/validation_result.json")),
            Item("validation and testing: metrics per class and group, bias and regression gates with their reasons",
                 run("reports/evaluation.json", "reports/bias.json", "reports/regression.json", "reports/gates.json")),
            Item("test logs signed by the responsible persons: the ledger's signed events", ["evidence/ledger/events.json"]),
            Item("cybersecurity of the artifact: OpenSSF model-signing bundle over the adapter, its manifest",
                 run("signature/adapter.sig", "adapter/manifest.json")),
            person("the rationale of the key design choices and assumptions, how the data was obtained and labelled, "
                   "and the organisation's cybersecurity measures"),
        ]),
    ]


def _control_and_lifecycle(present: set[str]) -> list[tuple[str, list[Item]]]:
    run = lambda *names: _run(present, *names)  # noqa: E731
    card_files, person = _card_files(present), _person
    return [
        ("3. Monitoring, functioning and control", [
            Item("capabilities and limitations, accuracy for groups of persons (with confidence intervals)", card_files),
            Item("human oversight: who may approve (the signed policy) and every decision taken",
                 ["evidence/ledger/policy.json", "evidence/ledger/events.json"]),
            person("foreseeable unintended outcomes and sources of risk to health, safety and fundamental rights; "
                   "input data specifications for deployers"),
        ]),
        ("4. Performance metrics and their appropriateness", [
            Item("the metrics and the gates' thresholds they were judged against",
                 run("reports/evaluation.json", "reports/regression.json", "config.yaml")),
            person("why these metrics and thresholds are appropriate for this use case"),
        ]),
        ("5. Risk management system (Article 9)", [
            Item("risk controls the pipeline enforces: validation, bias and regression gates, approval rules",
                 run("reports/gates.json", "config.yaml") + ["evidence/ledger/policy.json"]),
            person("the risk management system itself: identified risks, their estimation and evaluation, and the "
                   "measures adopted"),
        ]),
        ("6. Changes through the lifecycle", [
            Item("every version of this model and every decision on it, hash-chained and signed",
                 ["evidence/ledger/events.json", "evidence/ledger/chain.json"]),
        ]),
        ("7. Standards and specifications applied", [
            Item("CycloneDX 1.6 ML-BOM (validated against its schema)", run("reports/mlbom.cdx.json")),
            Item("OpenSSF model signing (Sigstore bundle, key mode)", run("signature/adapter.sig")),
            person("the harmonised standards or common specifications applied, or the other solutions adopted"),
        ]),
        ("8. EU declaration of conformity", [person("a copy of the EU declaration of conformity (Article 47)")]),
        ("9. Post-market monitoring plan", [
            Item("periodic re-review: review period and expiry of approvals (the signed policy), reviews due",
                 ["evidence/ledger/policy.json"] + card_files),
            person("the post-market monitoring plan (Article 72): what is monitored in use, by whom, and how drift "
                   "or incidents re-open the review"),
        ]),
    ]


def _index_markdown(model: str, version: str, generated_at: str, secs: list[tuple[str, list[Item]]]) -> str:
    lines = [f"# Technical file: {model} v{version}", "",
             f"Generated {generated_at} by `adaptrail technical-file {model}/{version}` from the recorded evidence. "
             "Each section of Annex IV of the EU AI Act lists the evidence files in this folder; items marked "
             f"**{NEEDS_INPUT}** must be written by a person (no pipeline knows them).", ""]
    for title, items in secs:
        lines += [f"## {title}", ""]
        for it in items:
            if it.needs_input:
                lines.append(f"- **{NEEDS_INPUT}:** {it.what}")
            elif it.files:
                lines.append(f"- {it.what}: " + ", ".join(f"[`{f}`]({f})" for f in it.files))
            else:
                lines.append(f"- {it.what}: **not recorded for this version**")
        lines.append("")
    return "\n".join(lines)


def build(model: str, version: str, out: Path, now: datetime | None = None) -> TechnicalFile:
    """Write the technical file of ``model`` v``version`` to ``out`` (a new or empty folder) and ``out.zip``."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; pass --out a new folder")
    zip_path = out.with_name(out.name + ".zip")
    if zip_path.exists():
        raise InputError(f"{zip_path} exists; pass --out a folder whose .zip does not exist yet")
    generated_at = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    c = registry.client()
    mv = registry.model_version(c, model, str(version))
    card = cards.build(model, str(version), now)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    except OSError as err:
        raise InputError(f"cannot write beside {out} ({err}); pass --out a folder you can write") from None
    try:
        evidence = staging / "evidence"
        cards.write(card, evidence / "card")
        for name in RUN_FILES:
            _copy_run_file(c, mv.run_id, name, evidence / "run" / name)
        _write_ledger(model, evidence / "ledger")
        present = {p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()}
        secs = sections(present, card)
        (staging / INDEX_MD).write_text(_index_markdown(model, str(version), generated_at, secs), encoding="utf-8")
        (staging / INDEX_JSON).write_text(json.dumps(
            {"model": model, "version": str(version), "generated_at": generated_at, "run_id": mv.run_id,
             "sections": [{"title": t, "items": [i.to_dict() for i in items]} for t, items in secs]},
            indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _zip(out, zip_path)
    needs = [f"{t}: {i.what}" for t, items in secs for i in items if i.needs_input]
    files = sum(1 for p in out.rglob("*") if p.is_file())
    return TechnicalFile(folder=out, zip_path=zip_path, evidence_files=files, needs_input=needs)


def _copy_run_file(c, run_id: str, name: str, dst: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="adaptrail-tf-") as tmp:
        got = registry.download_run_file(c, run_id, name, tmp)
        if got is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(got, dst)


def _write_ledger(model: str, folder: Path) -> None:
    """The model's ledger events (every version: the lifecycle), the chain's status and the policy in force."""
    folder.mkdir(parents=True, exist_ok=True)
    with Ledger() as led:
        chain, all_events = led.verified_events()
    t = trust.evaluate(all_events)
    events = [e.to_dict() for e in t.events(model=model)]
    (folder / "events.json").write_text(json.dumps(events, indent=2, sort_keys=True, default=str) + "\n",
                                        encoding="utf-8")
    (folder / "chain.json").write_text(json.dumps(
        {"ok": chain.ok, "length": chain.length, "head_hash": chain.head_hash,
         "first_broken_seq": chain.first_broken_seq}, indent=2) + "\n", encoding="utf-8")
    policy = {"digest": t.policy.digest, "content": t.policy.content} if t.policy else {"policy": None}
    (folder / "policy.json").write_text(json.dumps(policy, indent=2, sort_keys=True, default=str) + "\n",
                                        encoding="utf-8")


def _zip(folder: Path, zip_path: Path) -> None:
    tmp = zip_path.with_name(f".{zip_path.name}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, Path(folder.name) / p.relative_to(folder))
    tmp.rename(zip_path)
