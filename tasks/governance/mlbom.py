"""The version's ML bill of materials: a CycloneDX 1.6 JSON document, made at registration from the evidence the
pipeline recorded (nothing typed by hand), validated against the CycloneDX 1.6 schema before it is logged.

Components: the adapter (the registered artifact, with its model card), the pinned base model, the data set, and
every Python package of the environment that trained it (``pkg:pypi`` package URLs). ``cyclonedx-python-lib``
builds the document; its model has no ``modelCard`` (nor a data component's ``data``), so those two parts are
written here per the 1.6 specification and the whole document is then checked with the library's strict JSON
validator: a document that does not validate is an error, never logged.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import platform
from dataclasses import dataclass, field
from typing import Any

from tasks.core.errors import AdaptrailError

SPEC_VERSION = "1.6"
#: Where the document lies among the version run's artifacts (``reports/`` is logged with the other evidence).
MLBOM_FILE = "mlbom.cdx.json"
_APPROACH = {"sequence_classification": ("supervised", "text-classification"),
             "causal_lm": ("supervised", "text-generation")}


@dataclass(frozen=True)
class BomFacts:
    """What the document states, all of it recorded by the run that trained the adapter."""

    model_name: str  # the registered model
    run_id: str  # the training run (the adapter's version within the run's lineage)
    adapter_digest: str  # sha256 of the adapter's manifest (tasks.training.adapter_files)
    adapter_bytes: int
    peft_method: str
    trainable_params: int
    base_id: str
    base_revision: str
    base_digest: str  # sha256 over the base model's files
    dataset_path: str
    dataset_digest: str
    dataset_rows: dict[str, int]  # split -> rows
    labels: list[str]
    task: str  # model.task
    metrics: dict[str, float]  # test metrics (name -> value)
    gates: dict[str, dict[str, str]]  # gate -> {outcome, reason}
    hyperparameters: dict[str, Any]
    code_version: str
    flow_run_id: str
    requested_by: str
    created_at: str  # ISO 8601
    packages: dict[str, str] = field(default_factory=dict)  # distribution -> version


def environment_packages() -> dict[str, str]:
    """Every installed Python distribution of this process's environment: name -> version."""
    return dict(_installed())


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[tuple[str, str], ...]:  # read once per process
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            found.setdefault(name.lower().replace("_", "-"), dist.version)
    return tuple(sorted(found.items()))


def _sha256(digest: str) -> list:
    from cyclonedx.model import HashAlgorithm, HashType

    return [HashType(alg=HashAlgorithm.SHA_256, content=digest)] if len(digest) == 64 else []


def _props(pairs: dict[str, Any]) -> list:
    from cyclonedx.model import Property

    return [Property(name=f"adaptrail:{k}", value=str(v)) for k, v in pairs.items() if v not in (None, "")]


def build(facts: BomFacts) -> dict[str, Any]:
    """The CycloneDX 1.6 document as a JSON object (validated: see :func:`validate`)."""
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    adapter_ref, base_ref, data_ref = f"adapter:{facts.adapter_digest}", f"base:{facts.base_digest}", \
        f"dataset:{facts.dataset_digest}"
    adapter = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=facts.model_name, version=facts.run_id, bom_ref=adapter_ref,
        description=f"{facts.peft_method} adapter (only the delta) on {facts.base_id}",
        hashes=_sha256(facts.adapter_digest),
        properties=_props({"adapter.digest": facts.adapter_digest, "adapter.digest.scheme":
                           "sha256 of the canonical JSON of the adapter's manifest {file: sha256} (tasks/training/adapter_files.py)",
                           "adapter.bytes": facts.adapter_bytes, "peft.method": facts.peft_method,
                           "peft.trainable_params": facts.trainable_params, "code.version": facts.code_version,
                           "flow_run_id": facts.flow_run_id, "requested_by": facts.requested_by,
                           **{f"gate.{g}": d["outcome"] for g, d in facts.gates.items()}}))
    base = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=facts.base_id, version=facts.base_revision, bom_ref=base_ref,
        description="the frozen pretrained base the adapter is applied to", hashes=_sha256(facts.base_digest),
        properties=_props({"base_model.digest": facts.base_digest, "base_model.digest.scheme":
                           "sha256 over 'path NUL sha256' lines of every file of the base, sorted by path (tasks/training/model.py)"}))
    dataset = Component(
        type=ComponentType.DATA, name=facts.dataset_path, version=facts.dataset_digest[:12], bom_ref=data_ref,
        hashes=_sha256(facts.dataset_digest),
        properties=_props({"dataset.digest": facts.dataset_digest,
                           **{f"dataset.rows.{k}": v for k, v in facts.dataset_rows.items()}}))
    libraries = [Component(type=ComponentType.LIBRARY, name=name, version=version, bom_ref=f"pkg:pypi/{name}@{version}",
                           purl=PackageURL(type="pypi", name=name, version=version))
                 for name, version in facts.packages.items()]
    tools = Component(type=ComponentType.APPLICATION, name="adaptrail", version=facts.code_version,
                      bom_ref="adaptrail")
    bom = Bom(components=[base, dataset, *libraries],
              metadata=BomMetaData(component=adapter, properties=_props(
                  {"python": platform.python_version(), "platform": platform.platform(),
                   "created_at": facts.created_at})))
    bom.metadata.tools.components.add(tools)
    bom.dependencies.add(Dependency(ref=adapter.bom_ref, dependencies=[Dependency(ref=base.bom_ref),
                                                                       Dependency(ref=dataset.bom_ref)]))
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    doc["metadata"]["component"]["modelCard"] = model_card(facts, data_ref)
    for component in doc.get("components", []):
        if component.get("bom-ref") == data_ref:
            component["data"] = [dataset_data(facts)]
    return doc


def model_card(facts: BomFacts, data_ref: str) -> dict[str, Any]:
    """The CycloneDX 1.6 ``modelCard`` of the adapter, from the run's evidence only."""
    approach, task = _APPROACH.get(facts.task, ("supervised", facts.task))
    metrics = [{"type": name, "value": f"{value:.6g}", "slice": "test split"} for name, value in facts.metrics.items()]
    limitations = [f"gate {g} {d['outcome']}: {d['reason']}" for g, d in facts.gates.items()
                   if d["outcome"] != "passed"]
    fairness = [{"groupAtRisk": "groups of the data's group column",
                 "harms": facts.gates["bias"]["reason"] if "bias" in facts.gates else "not assessed",
                 "mitigationStrategy": "the bias gate (group metrics with confidence intervals, identity-swap "
                                       "counterfactuals); a failed gate blocks approval without a second approver"}]
    card: dict[str, Any] = {
        "modelParameters": {
            "approach": {"type": approach}, "task": task, "architectureFamily": facts.peft_method,
            "modelArchitecture": f"{facts.base_id} + {facts.peft_method} adapter",
            "datasets": [{"ref": data_ref}],
            "inputs": [{"format": "text"}],
            "outputs": [{"format": "label" if facts.task == "sequence_classification" else "text"}],
        },
        "quantitativeAnalysis": {"performanceMetrics": metrics} if metrics else {},
        "considerations": {"technicalLimitations": limitations or ["none recorded by the gates"],
                           "fairnessAssessments": fairness},
        "properties": [{"name": f"adaptrail:hyperparameter.{k}", "value": str(v)}
                       for k, v in sorted(facts.hyperparameters.items()) if v is not None],
    }
    return {k: v for k, v in card.items() if v}


def dataset_data(facts: BomFacts) -> dict[str, Any]:
    rows = ", ".join(f"{k} {v}" for k, v in facts.dataset_rows.items())
    return {"type": "dataset", "name": facts.dataset_path,
            "contents": {"properties": [{"name": "adaptrail:dataset.digest", "value": facts.dataset_digest}]},
            "classification": "training data", "description":
            f"rows per split: {rows}; labels: {', '.join(facts.labels)}"}


@functools.lru_cache(maxsize=1)
def _validator():
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def validate(doc: dict[str, Any]) -> None:
    """Refuse a document the CycloneDX 1.6 JSON schema does not accept (the library's strict validator)."""
    error = _validator().validate_str(json.dumps(doc))
    if error is not None:
        raise AdaptrailError(f"the ML-BOM does not validate against CycloneDX {SPEC_VERSION}: {error}")


def write(facts: BomFacts, path) -> dict[str, Any]:
    """Build, validate, then write the document to ``path`` (nothing is written when it does not validate)."""
    doc = build(facts)
    validate(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return doc

