"""The adapter card's facts (:class:`Card`), gathered from what the pipeline recorded: the version's tags, its run's
metrics and artifacts, and the ledger. ``tasks/governance/card.py`` renders and publishes them."""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from tasks.core.metrics import wilson_interval
from tasks.core.names import ARTIFACT_CONFIG, ARTIFACT_REPORTS, ARTIFACT_VALIDATION, GATES, Tag
from tasks.governance import registry, trust
from tasks.governance.ledger import Ledger
from tasks.governance.event_rules import NOT_DECISIONS
from tasks.governance.ledger_view import decision_record, ledger_tags

CARD_DIR = "card"
CARD_MD, CARD_HTML, CARD_JSON = "card.md", "card.html", "card.json"
#: Facts about the data and the base written at registration (``tasks/steps/register.py``) for the card.
DATASET_REPORT, BASE_REPORT = "dataset.json", "base_model.json"
#: The requester's fields, in the order the card shows them, and what each means.
PURPOSE_FIELDS = {"intended_use": "Intended use", "out_of_scope_use": "Out-of-scope use", "owner": "Owner",
                  "risk_class": "Risk class", "users": "Users and human oversight"}
CONFIDENCE = 0.95
LOW_RECALL = 0.80  # a class whose test recall is below this is a stated limitation
MIN_SUPPORT = 30  # fewer test rows of a class: its recall interval is too wide to rely on


@dataclass
class Card:
    model: str
    version: str
    generated_at: str
    status: str
    review_due: str
    run_id: str
    purpose: dict[str, str | None]
    missing: list[str]  # the card.* config fields nobody filled
    stated_limitations: list[str]
    data: dict[str, Any]
    base: dict[str, Any]
    method: dict[str, Any]
    cost: dict[str, Any]
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    per_group: list[dict[str, Any]]
    bias: list[dict[str, Any]]
    gates: list[dict[str, str]]
    approvals: list[dict[str, Any]]
    limitations: list[str]  # derived from the evidence
    lineage: dict[str, str]
    links: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- gathering ---------------------------------------------------------------------------------------------


def base_model_facts(base_id: str, revision: str, digest: str, path: str | None) -> dict[str, Any]:
    """The pinned base as the card states it, with its licence when the base's package or files state one."""
    licence, source = base_licence(base_id, path)
    return {"id": base_id, "revision": revision, "digest": digest, "path": path or "", "licence": licence,
            "licence_source": source}


def base_licence(base_id: str, path: str | None) -> tuple[str | None, str]:
    """(licence, where it was read) from the base's Python package metadata or its model card front matter."""
    try:
        meta = importlib.metadata.metadata(base_id)
    except importlib.metadata.PackageNotFoundError:
        meta = None
    if meta is not None:
        expression = meta.get("License-Expression") or meta.get("License")
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License")]
        if expression and expression.strip() and expression.strip().upper() != "UNKNOWN":
            return expression.strip(), f"package {base_id} metadata"
        if classifiers:
            return ", ".join(classifiers), f"package {base_id} classifiers"
    for folder in [Path(path)] if path else []:
        readme = folder / "README.md"
        if readme.is_file():
            found = re.search(r"^license:\s*(\S.*)$", readme.read_text(encoding="utf-8", errors="replace"), re.M)
            if found:
                return found.group(1).strip(), f"{readme.name} of the base model"
    return None, "not stated by the base model's package or files"


def build(model: str, version: str, now: datetime | None = None) -> Card:
    """The card of ``model`` v``version`` from MLflow (tags, run metrics and artifacts) and the ledger."""
    c = registry.client()
    mv = registry.model_version(c, model, str(version))
    tags, run_id = dict(mv.tags), mv.run_id
    config_text = registry.read_run_text(c, run_id, ARTIFACT_CONFIG)
    config = yaml.safe_load(config_text) if config_text else {}
    metrics = registry.run_metrics(c, run_id) or {}
    read = lambda p: registry.read_run_json(c, run_id, p)  # noqa: E731
    dataset, base = read(f"{ARTIFACT_REPORTS}/{DATASET_REPORT}") or {}, read(f"{ARTIFACT_REPORTS}/{BASE_REPORT}") or {}
    evaluation = read(f"{ARTIFACT_REPORTS}/evaluation.json") or {}
    bias = read(f"{ARTIFACT_REPORTS}/bias.json") or {}
    gates = read(f"{ARTIFACT_REPORTS}/gates.json") or []
    validation = read(f"{ARTIFACT_VALIDATION}/decision.json") or {}
    environment = read(f"{ARTIFACT_REPORTS}/environment.json") or {}
    with Ledger() as led:
        events = trust.read(led).events(model=model, version=str(version))
    tags |= {k: v for k, v in ledger_tags(events).items() if v}  # the ledger's record over the MLflow mirror
    card_cfg = config.get("card") or {}
    purpose = {k: (str(card_cfg[k]) if card_cfg.get(k) not in (None, "") else None) for k in PURPOSE_FIELDS}
    test = evaluation.get("test") if isinstance(evaluation.get("test"), dict) else {}
    card = Card(
        model=model, version=str(version),
        generated_at=(now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        status=tags.get(Tag.APPROVAL_STATUS, "?"), review_due=tags.get(Tag.REVIEW_DUE, ""), run_id=run_id,
        purpose=purpose, missing=[f"card.{k}" for k, v in purpose.items() if v is None],
        stated_limitations=[str(x) for x in card_cfg.get("limitations") or []],
        data=_data(config, dataset, validation),
        base=base or {"id": tags.get(Tag.BASE_MODEL, ""), "revision": tags.get(Tag.BASE_MODEL_REVISION, ""),
                      "digest": tags.get(Tag.BASE_MODEL_DIGEST, ""), "licence": None,
                      "licence_source": "not recorded at registration"},
        method=_method(tags, config), cost=_cost(metrics, environment),
        metrics={k: v for k, v in sorted(metrics.items()) if k.startswith(("test_", "validation_", "train_"))
                 and not k.startswith(("train_seconds", "train_tokens", "train_peak", "train_loss"))},
        per_class=class_rows(test), per_group=group_rows(test),
        bias=[{k: ch.get(k) for k in ("name", "value", "threshold", "passed", "judged", "detail")}
              for ch in bias.get("checks", [])],
        gates=[{"gate": g, "outcome": tags.get(Tag.gate(g), "?"),
                "reason": next((d.get("reason", "") for d in gates if d.get("gate") == g), "")} for g in GATES],
        approvals=[decision_record(e) for e in events if e.action not in ("registered", *NOT_DECISIONS)],
        limitations=[], lineage={k.removeprefix("adaptrail."): tags.get(k, "") for k in (
            Tag.DATASET_DIGEST, Tag.BASE_MODEL_DIGEST, Tag.ADAPTER_DIGEST, Tag.CODE_VERSION, Tag.FLOW_RUN_ID,
            Tag.REQUESTED_BY)},
        links={"run": run_id, "mlbom": f"runs:/{run_id}/{ARTIFACT_REPORTS}/mlbom.cdx.json",
               "validation_docs": f"runs:/{run_id}/{ARTIFACT_VALIDATION}/data_docs/index.html",
               "card": f"runs:/{run_id}/{CARD_DIR}/{CARD_HTML}"})
    card.limitations = derived_limitations(card, bias, (config.get("gates") or {}))
    return card


def _data(config: dict[str, Any], dataset: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    """The dataset card: the recorded profile, with the validation gate's checks and the PII ones among them."""
    checks = validation.get("checks", [])
    return {"path": (config.get("data") or {}).get("path", ""), **dataset,
            "validation": [{k: ch.get(k) for k in ("name", "passed", "judged", "detail")} for ch in checks],
            "pii": [{k: ch.get(k) for k in ("name", "passed", "detail")} for ch in checks
                    if str(ch.get("name", "")).startswith("pii")]}


def _method(tags: dict[str, str], config: dict[str, Any]) -> dict[str, Any]:
    settings = {f"peft.{k}": v for k, v in (config.get("peft") or {}).items()} | \
        {f"training.{k}": v for k, v in (config.get("training") or {}).items() if not isinstance(v, dict)}
    return {"method": tags.get(Tag.PEFT_METHOD, ""), "trainable_params": tags.get(Tag.PEFT_TRAINABLE_PARAMS, ""),
            "trainable_fraction": tags.get(Tag.PEFT_TRAINABLE_FRACTION, ""),
            "task": (config.get("model") or {}).get("task", ""), "settings": settings}


def _cost(metrics: dict[str, float], environment: dict[str, Any]) -> dict[str, Any]:
    return {"train_seconds": metrics.get("train_seconds"), "tokens_per_second": metrics.get("train_tokens_per_second"),
            "peak_memory_mib": metrics.get("train_peak_memory_mib"), "epochs_trained": metrics.get("epochs_trained"),
            "adapter_bytes": metrics.get("adapter_bytes"), "environment": environment}


def class_rows(test: dict[str, Any]) -> list[dict[str, Any]]:
    """Per class: precision, recall, F1, support and the Wilson interval of recall (correct of support)."""
    rows = []
    for label, m in (test.get("per_class") or {}).items():
        n, recall = int(m.get("support") or 0), m.get("recall")
        ci = list(wilson_interval(round(recall * n), n, CONFIDENCE)) if n and recall is not None else None
        rows.append({"label": label, "precision": m.get("precision"), "recall": recall, "f1": m.get("f1"),
                     "support": n, "recall_ci": ci})
    return rows


def group_rows(test: dict[str, Any]) -> list[dict[str, Any]]:
    """Per group: test rows, accuracy with its Wilson interval, macro-F1."""
    rows = []
    for group, m in (test.get("per_group") or {}).items():
        n, acc = int(m.get("n") or 0), m.get("accuracy")
        ci = list(wilson_interval(round(acc * n), n, CONFIDENCE)) if n and acc is not None else None
        rows.append({"group": group, "n": n, "accuracy": acc, "accuracy_ci": ci, "macro_f1": m.get("macro_f1")})
    return rows


def derived_limitations(card: Card, bias: dict[str, Any], gates_cfg: dict[str, Any]) -> list[str]:
    """What the evidence shows the adapter cannot be relied on for: small groups, weak or thin classes, checks that
    were not judged, gates that were skipped or failed."""
    out: list[str] = []
    min_group = int(((gates_cfg.get("bias") or {}).get("min_group_size")) or 30)
    small = [f"{g['group']} ({g['n']})" for g in card.per_group if g["n"] < min_group]
    if small:
        out.append(f"groups too small to judge (fewer than {min_group} test rows): {', '.join(small)}")
    low = [f"{r['label']} ({r['recall']:.2f})" for r in card.per_class
           if r["recall"] is not None and r["recall"] < LOW_RECALL]
    if low:
        out.append(f"classes with test recall below {LOW_RECALL:.2f}: {', '.join(low)}")
    thin = [f"{r['label']} ({r['support']})" for r in card.per_class if r["support"] < MIN_SUPPORT]
    if thin:
        out.append(f"classes with fewer than {MIN_SUPPORT} test rows (wide recall intervals): {', '.join(thin)}")
    if card.data.get("has_group") is False or (not card.per_group and card.method.get("task") ==
                                               "sequence_classification"):
        out.append("no group column: group fairness was not measured")
    unjudged = [f"{ch['name']}: {ch.get('detail') or 'not judged'}" for ch in bias.get("checks", [])
                if not ch.get("judged")]
    out += [f"bias check not judged — {x}" for x in unjudged]
    for g in card.gates:
        if g["outcome"] in ("skipped", "failed"):
            out.append(f"gate {g['gate']} {g['outcome']}: {g['reason'] or 'no reason recorded'}")
    return out


def card_location(c, run_id: str | None, artifact_uri: str | None = None) -> dict[str, str]:
    """Where a version's card is on its run ({} for versions registered before cards, or a deleted run).
    ``artifact_uri``: the run's artifact root when the caller has read the run already (saves a read of it)."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tasks.core import state

    if not run_id:
        return {}
    root = artifact_uri.rstrip("/") if artifact_uri else None
    lister = (lambda: c.list_artifacts(run_id, CARD_DIR)) if root is None else (
        lambda: mlflow.artifacts.list_artifacts(artifact_uri=f"{root}/{CARD_DIR}", tracking_uri=state.tracking_uri()))
    try:
        listed = {f.path for f in registry.read(f"artifacts of run {run_id}", lister)}
    except MlflowException as err:  # a deleted run: no card (the run's absence is its own finding)
        if not registry.is_not_found(err):
            raise
        return {}
    path = f"{CARD_DIR}/{CARD_HTML}"
    if path not in listed:
        return {}
    return {"artifact": f"runs:/{run_id}/{path}",
            "uri": f"{root}/{path}" if root is not None else registry.artifact_uri(c, run_id, path)}
