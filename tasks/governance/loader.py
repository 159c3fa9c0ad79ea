"""Verified loading (DESIGN.md: Loading an adapter for use): check everything, then attach the adapter.

``verify`` recomputes the adapter digest from the stored files and the digest of every base-model file, and checks
the approval (approved, review not overdue), the ledger chain, the signatures of the version's events (against the
policy in the ledger), the adapter's OpenSSF model-signing bundle (``attestation.py``), and that the tags agree with the
ledger. ``load_verified`` loads base + adapter only when all pass, from
the very copy of the adapter files that was checked; otherwise it raises :class:`LoadRefused` naming the reason.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import mlflow.artifacts
from mlflow.exceptions import MlflowException

from tasks.core import state
from tasks.governance import registry
from tasks.training.adapter_files import digest_of, file_map, read_metadata
from tasks.governance.ledger_view import disagreements, identity_of, is_overdue, ledger_tags, utc_now
from tasks.governance import attestation, trust
from tasks.core.config import ModelConfig
from tasks.core.errors import InputError
from tasks.governance.ledger import Ledger, LedgerEvent
from tasks.governance.verify_report import Check, LoadRefused, VerifyReport  # noqa: F401 (re-exported)
from tasks.governance.monitoring_record import review_required_verdict
from tasks.governance.policy import Policy
from tasks.training.causal_lm import load_causal_lm, prepare_tokenizer
from tasks.training.loop import predict_proba
from tasks.training.model import load_classifier, load_tokenizer, resolve_base_model, weights_digest
from tasks.core.names import ADAPTER_MANIFEST, ADAPTER_METADATA, ALIAS_CHAMPION, ApprovalStatus, Tag

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MODELS_SCHEME = "models:/"

Purpose = Literal["use", "monitor"]
log = logging.getLogger("adaptrail")


@dataclass
class LoadedAdapter:
    """Base model + attached adapter, ready to predict; only :func:`load_verified` makes one."""

    model: Any
    tokenizer: Any
    labels: list[str]
    max_length: int
    name: str
    version: str
    report: VerifyReport
    task: str = "sequence_classification"
    max_new_tokens: int = 16

    def generate(self, prompts: list[str], max_new_tokens: int | None = None, batch_size: int = 16) -> list[str]:
        """causal_lm: greedy responses to ``prompts`` (as in training: ``[bos] prompt``, cut at eos)."""
        from tasks.training.causal_lm import generate

        self._require("causal_lm", "generate")
        return generate(self.model, self.tokenizer, list(prompts), self.max_length,
                        max_new_tokens or self.max_new_tokens, batch_size)

    def score(self, texts: list[str], batch_size: int = 16) -> list[float]:
        """causal_lm: the log-likelihood of each text (sum over its tokens after bos)."""
        from tasks.training.causal_lm import encode_texts, token_logprobs

        self._require("causal_lm", "score")
        total, _ = token_logprobs(self.model, encode_texts(self.tokenizer, list(texts), self.max_length),
                                  self.tokenizer.pad_token_id, batch_size)
        return [float(v) for v in total]

    def _require(self, task: str, what: str) -> None:
        if self.task != task:
            raise InputError(f"{self.name} v{self.version} is a {self.task} adapter; {what} needs a {task} adapter")

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """Per text: the predicted ``label``, its ``proba`` and every class's probability (``scores``)."""
        proba = predict_proba(self.model, self.tokenizer, list(texts), self.max_length, batch_size)
        out = []
        for row in proba:
            best = int(row.argmax())
            out.append({"label": self.labels[best], "proba": float(row[best]),
                        "scores": {label: float(p) for label, p in zip(self.labels, row)}})
        return out


# --- references -------------------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``MODEL/VERSION``, ``MODEL@alias`` (optionally prefixed ``models:/``) -> (model, version, alias)."""
    rest = ref.strip().removeprefix(MODELS_SCHEME)
    if "@" in rest:
        model, alias = rest.rsplit("@", 1)
        if model and alias:
            return model, None, alias
    elif "/" in rest:
        model, version = rest.rsplit("/", 1)
        if model and version.isdigit():
            return model, version, None
    raise InputError(f"cannot read model reference {ref!r}; write MODEL/VERSION, MODEL@alias or "
                     f"models:/MODEL@{ALIAS_CHAMPION}")


def resolve_ref(ref: str) -> tuple[str, str]:
    """The (model, version) a reference names now; an alias is resolved once, so the checks and the load agree."""
    model, version, alias = parse_ref(ref)
    if version is not None:
        return model, version
    mv = registry.version_by_alias(registry.client(), model, alias)
    if mv is None:
        raise InputError(f"{model} has no alias {alias!r} in the registry at {state.tracking_uri()} (state directory "
                         f"{state.home()}); approve a version first, name one as {model}/VERSION, or set "
                         "ADAPTRAIL_HOME / MLFLOW_TRACKING_URI to the state you meant")
    return model, str(mv.version)


# --- the stored adapter -----------------------------------------------------------------------------------


def fetch_adapter(source: str, dst: Path) -> Path:
    """A private copy of the adapter folder at ``source`` (any MLflow artifact store) under ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(registry.read(f"the adapter files at {source}", lambda: mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(dst), tracking_uri=state.tracking_uri())))
    except (MlflowException, OSError) as err:  # missing or unreadable files (a server that is down raised above)
        raise InputError(f"cannot read the adapter files at {source}: {err}") from None


def fetch_manifest(source: str) -> tuple[bytes, str]:
    """The stored ``manifest.json`` (exact bytes) and the digest it claims."""
    with tempfile.TemporaryDirectory(prefix="adaptrail-manifest-") as tmp:
        try:
            path = registry.read(f"{ADAPTER_MANIFEST} at {source}", lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=source.rstrip("/") + "/" + ADAPTER_MANIFEST, dst_path=tmp,
                tracking_uri=state.tracking_uri()))
        except (MlflowException, OSError) as err:
            raise InputError(f"cannot read {ADAPTER_MANIFEST} at {source}: {err}") from None
        data = Path(path).read_bytes()
    try:
        return data, str(json.loads(data)["digest"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{ADAPTER_MANIFEST} at {source} is not an adaptrail manifest") from None


def adapter_problems(adapter_dir: Path, expected_digest: str) -> list[str]:
    """Differences between the files on disk, their manifest and the registered digest ([] when all agree)."""
    manifest_path = adapter_dir / ADAPTER_MANIFEST
    if not manifest_path.is_file():
        return [f"{ADAPTER_MANIFEST} is missing"]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed, claimed = dict(manifest["files"]), str(manifest["digest"])
    except (ValueError, KeyError, TypeError):
        return [f"{ADAPTER_MANIFEST} is not readable (edited?)"]
    on_disk = file_map(adapter_dir)
    problems = []
    for name in sorted(set(listed) | set(on_disk)):
        if name not in on_disk:
            problems.append(f"file {name} is missing")
        elif name not in listed:
            problems.append(f"file {name} is not in the manifest (added)")
        elif on_disk[name] != listed[name]:
            problems.append(f"file {name} changed (sha256 {on_disk[name][:12]}... , manifest {listed[name][:12]}...)")
    if digest_of(listed) != claimed:
        problems.append(f"{ADAPTER_MANIFEST}'s digest does not match its own file list (manifest edited)")
    recomputed = digest_of(on_disk)
    if recomputed != expected_digest:
        problems.append(f"recomputed digest {recomputed[:16]}... is not {Tag.ADAPTER_DIGEST} "
                        f"{(expected_digest or 'unset')[:16]}...")
    pickles = [n for n in on_disk if n.endswith(PICKLE_SUFFIXES)]
    if pickles:
        problems.append(f"pickle files {pickles}: adapters load from safetensors only")
    if ADAPTER_WEIGHTS not in on_disk:
        problems.append(f"{ADAPTER_WEIGHTS} is missing")
    return problems


# --- verify and load --------------------------------------------------------------------------------------


def verify(ref: str, *, now: datetime | None = None, purpose: Purpose = "use") -> VerifyReport:
    """Run every check on the version ``ref`` names; never raises for a failed check (see ``report.ok``).
    ``purpose`` "monitor": a version that monitoring sent back for review may still be loaded to monitor it."""
    model, version = resolve_ref(ref)
    with tempfile.TemporaryDirectory(prefix="adaptrail-verify-") as tmp:
        report = _verify(ref, model, version, Path(tmp), utc_now(now), purpose)
    report.adapter_dir = None
    return report


def load_verified(ref: str, *, now: datetime | None = None, purpose: Purpose = "use") -> LoadedAdapter:
    """Base model + adapter, loaded only after :func:`verify`'s checks pass; else :class:`LoadRefused`."""
    from tasks.training.methods import load_weights

    model_name, version = resolve_ref(ref)
    with tempfile.TemporaryDirectory(prefix="adaptrail-load-") as tmp:
        report = _verify(ref, model_name, version, Path(tmp), utc_now(now), purpose)
        if not report.ok:
            raise LoadRefused(report)
        for warning in report.warnings:
            log.warning("%s v%s: %s", model_name, version, warning)
        meta = read_metadata(report.adapter_dir)
        cfg = _model_config(report.base.id, report.base.revision, meta)
        labels = [str(label) for label in meta["labels"]]
        base_model = (load_causal_lm(report.base.path, cfg) if cfg.task == "causal_lm"
                      else load_classifier(report.base, cfg, labels)[0])
        model = load_weights(base_model, report.adapter_dir, meta)
        model.eval()
        tokenizer = load_tokenizer(report.base, cfg)
    report.adapter_dir = None
    if cfg.task == "causal_lm":
        tokenizer = prepare_tokenizer(tokenizer)
    return LoadedAdapter(model, tokenizer, labels, cfg.max_length, model_name, version, report, task=cfg.task,
                         max_new_tokens=cfg.max_new_tokens)


@dataclass
class ChampionLoad:
    """The ``champion`` version through the verified loader: loaded, or the reason it was refused."""

    version: str
    run_id: str | None
    loaded: LoadedAdapter | None
    refusal: str = ""
    skipped: bool = False  # the signed policy says an unloadable champion is skipped (not failed) by the gates

    @property
    def note(self) -> str:
        return f"champion v{self.version} could not be loaded: {self.refusal}"


def load_champion(model_name: str) -> ChampionLoad | None:
    """The one champion loader of the gates: None when the model has no champion yet. A champion that fails
    verification is returned with the reason (never used silently); a registry that cannot be read raises."""
    mv = registry.version_by_alias(registry.client(), model_name, ALIAS_CHAMPION)
    if mv is None:
        return None
    try:
        loaded = load_verified(f"{model_name}/{mv.version}")
    except LoadRefused as err:
        with Ledger() as led:
            policy = trust.read(led).policy
        skip = policy is not None and policy.skip_unloadable_champion
        return ChampionLoad(str(mv.version), mv.run_id, None, err.report.reason, skipped=skip)
    return ChampionLoad(str(mv.version), mv.run_id, loaded)


def predict(ref: str, texts: list[str], *, batch_size: int = 64, now: datetime | None = None
            ) -> list[dict[str, Any]]:
    """Classify ``texts`` with the verified adapter ``ref`` names (e.g. ``support-ticket-router@champion``)."""
    if not texts or any(not isinstance(t, str) for t in texts):
        raise InputError("give at least one text to classify (strings)")
    return load_verified(ref, now=now).predict(texts, batch_size)


def _verify(ref: str, model: str, version: str, workdir: Path, now: datetime, purpose: Purpose = "use"
            ) -> VerifyReport:
    c = registry.client()
    mv = registry.model_version(c, model, version)
    report = VerifyReport(ref, model, version)
    with Ledger() as led:
        chain, events = led.verified_events()
    t = trust.evaluate(events)
    model_events = t.events(model=model)
    report.checks.append(Check("ledger", chain.ok, chain.problem or f"chain of {chain.length} events verifies"))
    report.checks.append(_signature_check(t, model, version))
    champion = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    problems = disagreements(model, version, mv.tags, model_events, str(champion.version) if champion else None,
                             identity_of(mv))
    report.checks.append(Check("tags", not problems, "; ".join(problems) or "MLflow tags agree with the ledger"))
    own = [e for e in model_events if e.version == version]
    view = ledger_tags(own) if own else dict(mv.tags)  # judge on the record, not on editable tags
    report.checks.append(_approval_check(model, version, view, now, own, t.policy, purpose))

    try:
        adapter_dir = fetch_adapter(mv.source, workdir / "adapter")
        problems = adapter_problems(adapter_dir, view.get(Tag.ADAPTER_DIGEST, ""))
    except InputError as err:
        adapter_dir, problems = workdir / "adapter", [str(err)]
    digest = view.get(Tag.ADAPTER_DIGEST, "")
    report.checks.append(Check("adapter", not problems, "; ".join(problems) or
                               f"files match manifest and {Tag.ADAPTER_DIGEST} {digest[:16]}..."))
    report.adapter_dir = adapter_dir
    signed = attestation.check_version(own, t.unsigned, t.policy, adapter_dir, mv.run_id)  # OpenSSF model-signing
    report.checks.append(Check("model_signing", signed.ok, signed.detail))
    report.checks.append(_base_check(report, view, adapter_dir))
    return report


def _signature_check(t: trust.Trust, model: str, version: str) -> Check:
    """The version's events that do not count (bad or missing signatures), and an approval recorded unsigned (before
    the policy) when the policy requires signed approvals."""
    bad = [p for p in t.problems if (p.model, p.version) == (model, version)]
    if bad:
        return Check("signature", False, "; ".join(f"seq {p.seq} ({p.action}) does not count: {p.text}" for p in bad))
    if t.policy is None:
        return Check("signature", False, "the ledger holds no policy, so no decision is signed; an admin runs "
                     "`adaptrail init` or `adaptrail policy apply`")
    own = t.events(model=model, version=version)
    approving = [e for e in own if e.action in ("approved", "overridden", "reviewed")
                 and not e.extra.get("awaiting_second")]
    if approving and approving[-1].seq in t.unsigned and t.policy.require_signed_approval:
        return Check("signature", False, f"the approval in force (seq {approving[-1].seq}) was recorded before "
                     f"signing; re-review it: `adaptrail review {model} {version} --key KEY --reason ...`")
    signed = [e for e in own if e.seq not in t.unsigned]
    return Check("signature", True, f"{len(signed)} of {len(own)} events signed by keys of the policy "
                 f"{t.policy.digest[:12]}...")


def _approval_check(model: str, version: str, view: dict[str, str], now: datetime, own: list[LedgerEvent],
                    policy: Policy | None, purpose: str) -> Check:
    status, due = view.get(Tag.APPROVAL_STATUS, "unset"), view.get(Tag.REVIEW_DUE, "")
    if status == ApprovalStatus.EXPIRED or is_overdue(view, now):
        return Check("approval", False, f"expired: review was due {due or '(unset)'}; re-review with "
                     f"`adaptrail review {model} {version} --reason ...`")
    if status == ApprovalStatus.REVIEW_REQUIRED:
        ok, detail = review_required_verdict(model, version, own, policy, purpose)
        return Check("approval", ok, detail, warning=ok)
    if status != ApprovalStatus.APPROVED:
        return Check("approval", False, f"not approved: status is {status}")
    return Check("approval", True, f"approved by {view.get(Tag.APPROVAL_BY, '?')} at "
                 f"{view.get(Tag.APPROVAL_AT, '?')}; review due {due}")


def _base_check(report: VerifyReport, view: dict[str, str], adapter_dir: Path) -> Check:
    base_id, want = view.get(Tag.BASE_MODEL, ""), view.get(Tag.BASE_MODEL_DIGEST, "")
    if not base_id or not want:
        return Check("base_model", False, f"the version records no {Tag.BASE_MODEL} / {Tag.BASE_MODEL_DIGEST}")
    try:
        meta = read_metadata(adapter_dir) if (adapter_dir / ADAPTER_METADATA).is_file() else {}
        ref = resolve_base_model(_model_config(base_id, view.get(Tag.BASE_MODEL_REVISION), meta))
    except (InputError, OSError, ValueError, KeyError) as err:
        return Check("base_model", False, f"cannot resolve base model {base_id!r}: {err}")
    if ref.digest == want:
        report.base = ref
        return Check("base_model", True, f"{base_id} ({ref.revision}) digest of every file {want[:16]}... matches")
    if weights_digest(Path(ref.path)) == want:  # recorded before whole-directory digests: weights only
        report.base = ref
        return Check("base_model", True, f"{base_id} ({ref.revision}) weights digest {want[:16]}... matches (a "
                     "digest recorded before whole-directory digests: config and tokenizer are not covered)")
    return Check("base_model", False, f"{base_id} at {ref.path} has digest {ref.digest[:16]}..., the adapter was "
                 f"trained on {want[:16]}...")


def _model_config(base: str, revision: str | None, meta: dict[str, Any]) -> ModelConfig:
    """Loading settings from the adapter's metadata; ``trust_remote_code`` only when it says exactly true."""
    task = meta.get("task", "sequence_classification")
    if task not in ("sequence_classification", "causal_lm"):
        raise InputError(f"adapter task {task!r} is not supported; only sequence_classification and causal_lm")
    return ModelConfig(base=base, revision=revision or None, task=task, max_length=int(meta.get("max_length", 128)),
                       max_new_tokens=int(meta.get("max_new_tokens", 16)),
                       trust_remote_code=meta.get("trust_remote_code") is True)
