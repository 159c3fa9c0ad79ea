"""Monitoring an adapter in use (the ``monitor_adapter`` flow and ``adaptrail monitor``): score a batch of new texts
with the verified adapter and compare it with the evidence the version was approved on.

watch (verified adapter + the recorded held-out splits, digest-checked against the ledger, + the thresholds of the
signed policy) -> read batch -> measure and judge (drift; with labels: performance and the bias gate's group checks)
-> MLflow run in ``adaptrail-monitoring`` -> ledger event (``monitored``; a breach of an approved version:
``review_required``). Raw texts never leave this module: reports hold aggregates, and redacted examples only when
the policy allows them.
"""

from __future__ import annotations

import glob
import json
import logging
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.canonical import json_sha256
from tasks.core.config import Config
from tasks.core.errors import InputError, Refused
from tasks.core.names import (MONITOR_EXPERIMENT, RUN_TAG_MONITOR_MODEL, RUN_TAG_MONITOR_OUTCOME,
                              RUN_TAG_MONITOR_VERSION, TAG_MONITOR_LAST)
from tasks.core.predictions import Predictions
from tasks.data.splits import read_table
from tasks.gates import drift, performance
from tasks.gates.bias import bias_gate
from tasks.gates.decision import Check
from tasks.governance import approvals, registry, reproduce, trust
from tasks.governance.ledger import Ledger
from tasks.governance.loader import LoadedAdapter, load_verified, resolve_ref
from tasks.governance.monitoring_record import BREACH, INSUFFICIENT, PASS, effective_thresholds
from tasks.steps.monitor_report import report_markdown
from tasks.training.embeddings import load_encoder, mean_pooled
from tasks.training.loop import predict_proba
from validation.pii import redact

log = logging.getLogger("adaptrail")
BATCH_SIZE = 64
EXAMPLES = 5


@dataclass
class Watched:
    """The version under watch: its verified adapter, the evidence it was approved on, and the thresholds."""

    model: str
    version: str
    loaded: LoadedAdapter
    config: Config
    run_id: str
    reference: pd.DataFrame  # the held-out splits it was evaluated on (text, label, group)
    vocabulary: set[str]
    thresholds: dict[str, Any]
    notes: list[str]
    policy_digest: str


@dataclass
class Batch:
    texts: list[str]
    labels: list[str] | None
    groups: list[str] | None
    source: str  # the path or glob as given, and the files it matched
    files: list[str]
    digest: str  # sha256 of the texts (which data was judged, without keeping it)
    dropped: int = 0  # rows without text
    notes: list[str] = field(default_factory=list)


def watch(ref: str) -> Watched:
    """Load the version ``ref`` names through the verified loader (a version in review_required may be monitored)
    and its approved evidence: the recorded config's held-out splits, refused if the data no longer has the digest
    the ledger recorded."""
    model, version = resolve_ref(ref)
    loaded = load_verified(f"{model}/{version}", purpose="monitor")
    if loaded.task != "sequence_classification":
        raise InputError(f"{model} v{version} is a {loaded.task} adapter; monitoring covers sequence classification")
    rec = reproduce.recorded(model, version)
    splits = reproduce.load_splits(rec.config)
    if splits.digest != rec.dataset_digest:
        raise Refused(f"refused: the data {model} v{version} was approved on ({rec.config.data.path}) no longer has "
                      f"its recorded digest ({splits.digest[:12]}... now, {rec.dataset_digest[:12]}... recorded); "
                      "monitoring compares new texts with that evidence, so restore it")
    with Ledger() as led:
        policy = trust.read(led).policy
    thresholds, notes = effective_thresholds(policy, rec.config.monitoring.model_dump())
    reference = pd.concat([splits.validation, splits.test], ignore_index=True)
    return Watched(model, version, loaded, rec.config, rec.run_id, reference,
                   drift.vocabulary(list(splits.train["text"].astype(str))), thresholds, notes,
                   policy.digest if policy is not None else "")


def read_batch(data: str, w: Watched, text_column: str | None = None, label_column: str | None = None,
               group_column: str | None = None) -> Batch:
    """The new texts from a file or a glob of files (CSV/JSONL/Parquet); labels and groups are used when their
    columns are there (default names: the recorded config's)."""
    if not data or not str(data).strip():
        raise InputError("give the new texts: --data PATH (a CSV/JSONL/Parquet file, or a glob such as "
                         "'landing/*.jsonl')")
    files = sorted(glob.glob(str(Path(data).expanduser()))) or [str(Path(data).expanduser())]
    frames = [read_table(Path(f), "auto")[0] for f in files]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    dc = w.config.data
    text, label, group = text_column or dc.text_column, label_column or dc.label_column, group_column or dc.group_column
    if text not in frame.columns:
        raise InputError(f"{data}: no text column {text!r} (columns: {', '.join(map(str, frame.columns))}); pass "
                         "--text-column NAME")
    keep = frame[text].notna() & (frame[text].astype(str).str.strip() != "")
    frame = frame[keep]
    texts = frame[text].astype(str).tolist()
    labels = frame[label].astype(str).tolist() if label in frame.columns and frame[label].notna().all() else None
    groups = frame[group].astype(str).tolist() if group and group in frame.columns else None
    notes = [] if labels is not None or label not in frame.columns else [
        f"column {label!r} has rows without a label: the batch is judged as unlabelled"]
    return Batch(texts, labels, groups, str(data), files, json_sha256(texts), int((~keep).sum()), notes)


def _score(w: Watched, texts: list[str], encoder) -> tuple[np.ndarray, np.ndarray]:
    lo = w.loaded
    proba = predict_proba(lo.model, lo.tokenizer, texts, lo.max_length, BATCH_SIZE)
    return proba, mean_pooled(encoder, lo.tokenizer, texts, lo.max_length, BATCH_SIZE)


def measure(w: Watched, b: Batch, out: Path) -> dict[str, Any]:
    """Score the reference and the batch, measure, judge; the Evidently plots go to ``out/drift.html``."""
    th = w.thresholds
    result: dict[str, Any] = {"model": w.model, "version": w.version, "rows": len(b.texts),
                              "labelled": b.labels is not None, "grouped": b.groups is not None,
                              "data": b.source, "files": len(b.files), "data_digest": b.digest,
                              "dropped_rows": b.dropped, "thresholds": th, "notes": w.notes + b.notes,
                              "policy_digest": w.policy_digest, "at": _now(), "checks": []}
    if len(b.texts) < th["min_rows"]:
        result.update(outcome=INSUFFICIENT, reason=f"{len(b.texts)} texts < monitoring.min_rows={th['min_rows']}: "
                      "too few to judge; nothing was measured")
        return result
    labels = w.loaded.labels
    encoder = load_encoder(w.loaded.report.base.path, w.config.model.trust_remote_code)
    ref_texts = w.reference["text"].astype(str).tolist()
    ref_proba, ref_emb = _score(w, ref_texts, encoder)
    cur_proba, cur_emb = _score(w, b.texts, encoder)
    ref = drift.side(ref_texts, w.vocabulary, labels, ref_proba, ref_emb)
    cur = drift.side(b.texts, w.vocabulary, labels, cur_proba, cur_emb)
    found = drift.measures(ref, cur, th["alpha"], out / "drift.html")
    checks = drift.drift_checks(found, th, th["alpha"])
    result["drift"] = {k: {x: y for x, y in m.items() if x != "threshold_key"} for k, m in found.items()}
    if b.labels is not None:
        checks += _labelled(w, b, ref_proba, cur_proba, result)
    result["checks"] = [vars(c) for c in checks]
    failed = [c for c in checks if c.judged and not c.passed]
    result["breaches"] = [c.name for c in failed]
    result["outcome"] = BREACH if failed else PASS
    result["reason"] = "; ".join(c.detail for c in failed) or f"all {sum(c.judged for c in checks)} checks passed"
    if failed and th["allow_examples"]:
        order = np.argsort(cur.confidence)[:EXAMPLES]  # the texts it was least sure about, redacted
        result["examples"] = [{"text": redact(b.texts[i]), "predicted": cur.predicted[i],
                               "confidence": round(float(cur.confidence[i]), 3)} for i in order]
    return result


def _labelled(w: Watched, b: Batch, ref_proba: np.ndarray, cur_proba: np.ndarray, result: dict[str, Any]
              ) -> list[Check]:
    """Accuracy and macro-F1 against the reference's, per class and per group, and the bias gate's group checks
    re-run on the batch with the thresholds the version was approved under."""
    th, labels = w.thresholds, w.loaded.labels
    ref_pred = [labels[i] for i in ref_proba.argmax(axis=1)]
    cur_pred = [labels[i] for i in cur_proba.argmax(axis=1)]
    reference = performance.scores(w.reference["label"].astype(str).tolist(), ref_pred, labels,
                                   th["bootstrap_samples"])
    batch = performance.scores(b.labels, cur_pred, labels, th["bootstrap_samples"], seed=1)
    result["performance"] = {"reference": performance.public(reference), "batch": performance.public(batch)}
    checks = performance.performance_checks(reference, batch, th)
    if b.groups is None:
        return checks
    result["performance"]["groups"] = performance.group_scores(b.labels, cur_pred, b.groups, labels,
                                                               th["min_group_rows"], th["bootstrap_samples"])
    cfg = w.config.gates.bias.model_copy(update={"min_group_size": max(w.config.gates.bias.min_group_size,
                                                                         th["min_group_rows"])})
    gate = bias_gate(Predictions.from_proba(labels, b.labels, cur_proba, b.groups), cfg)
    result["bias"] = {"outcome": str(gate.outcome), "reason": gate.reason,
                      "gaps": (gate.details.get("groups") or {}).get("gaps", {})}
    return checks + [Check(f"groups: {c.name}", c.passed, c.value, c.threshold, c.detail, c.judged)
                     for c in gate.checks]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {"batch_rows": float(result["rows"])}
    for name, m in (result.get("drift") or {}).items():
        out[f"drift_{name}"] = float(m["effect"])
    for k in ("accuracy", "macro_f1"):
        value = ((result.get("performance") or {}).get("batch") or {}).get(k, {}).get("value")
        if value is not None:
            out[f"batch_{k}"] = float(value)
    return out


def log_run(w: Watched, result: dict[str, Any], out: Path) -> str:
    """The monitoring run in MLflow (experiment ``adaptrail-monitoring``): thresholds as params, effects and
    metrics, and ``monitoring/`` = report.json, report.md and Evidently's drift.html. Returns its run id."""
    c = registry.client()
    run_id = registry.start_run(c, MONITOR_EXPERIMENT, f"{w.model}-v{w.version}", {
        RUN_TAG_MONITOR_MODEL: w.model, RUN_TAG_MONITOR_VERSION: w.version,
        RUN_TAG_MONITOR_OUTCOME: result["outcome"], "adaptrail.monitor.version_run_id": w.run_id})
    result["run_id"] = run_id
    (out / "report.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n",
                                     encoding="utf-8")
    (out / "report.md").write_text(report_markdown(result), encoding="utf-8")
    try:
        registry.log_params(c, run_id, {f"threshold.{k}": v for k, v in result["thresholds"].items()})
        registry.log_metrics(c, run_id, _metrics(result))
        registry.log_path(c, run_id, out, "monitoring")
    except Exception:
        registry.end_run(c, run_id, ok=False)
        raise
    return run_id


def record(w: Watched, result: dict[str, Any]) -> approvals.Decision:
    """The ledger event (signed by the service key) and the version's informational ``monitoring.last`` tag; the
    MLflow run is marked failed if the ledger refuses, so no run stands for a result the ledger does not hold."""
    c = registry.client()
    summary = {"outcome": result["outcome"], "run_id": result["run_id"], "rows": result["rows"],
               "labelled": result["labelled"], "breaches": result.get("breaches", []), "data": result["data"],
               "data_digest": result["data_digest"], "on_review_required": result["thresholds"]["on_review_required"]}
    try:
        decision = approvals.record_monitoring(w.model, w.version, summary, f"monitoring: {result['reason']}"[:500])
    except Exception:
        registry.end_run(c, result["run_id"], ok=False)
        raise
    registry.end_run(c, result["run_id"], ok=True)
    c.set_model_version_tag(w.model, w.version, TAG_MONITOR_LAST,
                            f"{result['outcome']} at {result['at']} (run {result['run_id']})")
    result["ledger_seq"], result["status"] = decision.seq, decision.status
    return decision


def run_monitor(ref: str, data: str, *, text_column: str | None = None, label_column: str | None = None,
                group_column: str | None = None) -> dict[str, Any]:
    """The whole monitoring run outside Prefect (the CLI): watch, read, measure, log, record."""
    w = watch(ref)
    b = read_batch(data, w, text_column, label_column, group_column)
    with tempfile.TemporaryDirectory(prefix="adaptrail-monitor-") as tmp:
        result = measure(w, b, Path(tmp))
        log_run(w, result, Path(tmp))
    record(w, result)
    return result
