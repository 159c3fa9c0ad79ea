"""The adapter card: every section filled from a real run, missing requester fields shown as missing (never
invented), the MLflow description carrying the summary, and the card refreshed by a decision."""

from __future__ import annotations

import json

import pytest

from tasks.governance import card as card_mod
from tasks.governance import technical_file

CARD_SETS = ["card.intended_use=route tickets to a team, suggested to an agent",
             "card.out_of_scope_use=decisions about customers",
             "card.owner=support-platform", "card.risk_class=limited",
             "card.users=support agents confirm every suggestion"]


@pytest.mark.integration
def test_a_card_from_a_real_run_fills_every_section_and_a_decision_refreshes_it(prefect_harness, state_home,
                                                                                   tickets_csv, tiny_bert, capsys,
                                                                                   tmp_path):
    from flows.cli import main
    from tests.builders import people_now
    from tests.test_flow import PASSABLE_GATES, _args, _client
    from tasks.governance import approvals

    assert main(_args(tickets_csv, tiny_bert, *PASSABLE_GATES, *CARD_SETS)) == 0, capsys.readouterr().out
    mv = _client().get_model_version("support-ticket-router", "1")
    card = card_mod.build("support-ticket-router", "1")
    # purpose: the requester's statements, none missing
    assert card.missing == [] and card.purpose["risk_class"] == "limited"
    assert card.purpose["intended_use"] == "route tickets to a team, suggested to an agent"
    # data: source, digest, rows per split and class, group distribution, validation and PII checks
    assert card.data["digest"] == mv.tags["adaptrail.lineage.dataset.digest"]
    splits = card.data["splits"]
    assert set(splits) == {"train", "validation", "test"}
    assert sum(splits["train"]["per_class"].values()) == splits["train"]["rows"] > 0
    assert sum(splits["test"]["per_group"].values()) == splits["test"]["rows"]
    assert card.data["validation"] and all(v["name"] for v in card.data["validation"])
    assert {p["name"] for p in card.data["pii"]} >= {"pii_email", "pii_phone", "pii_card"}
    # base: id, revision, digest; its licence is unknown for a model built in the test, and said so
    assert card.base["digest"] == mv.tags["adaptrail.lineage.base_model.digest"]
    assert card.base["licence"] is None and "not stated" in card.base["licence_source"]
    # method and hyper-parameters, training cost (time, tokens/s, peak memory, hardware and library versions)
    assert card.method["method"] == "lora" and card.method["settings"]["peft.r"] == 4
    assert card.cost["train_seconds"] > 0 and card.cost["tokens_per_second"] > 0
    assert card.cost["peak_memory_mib"] > 0 and card.cost["environment"]
    # evaluation per class and per group, each with a 95% interval around its point estimate
    eps = 1e-9  # the interval's bounds are floats; a rate of exactly 0 or 1 is its own bound
    assert card.per_class and all(r["recall_ci"][0] - eps <= r["recall"] <= r["recall_ci"][1] + eps
                                  for r in card.per_class)
    assert card.per_group and all(g["accuracy_ci"][0] - eps <= g["accuracy"] <= g["accuracy_ci"][1] + eps
                                  for g in card.per_group)
    assert {g["gate"]: g["outcome"] for g in card.gates} == {"validation": "passed", "bias": "passed",
                                                              "regression": "passed"}
    assert all(g["reason"] for g in card.gates)
    # limitations derived from the evidence: this tiny model has weak classes, which the card names
    assert any("recall below" in x for x in card.limitations), card.limitations
    # logged on the version's run; the version's MLflow description is the summary
    logged = {a.path for a in _client().list_artifacts(mv.run_id, "card")}
    assert logged == {"card/card.md", "card/card.html", "card/card.json"}
    assert "route tickets to a team" in mv.description and "**pending**" in mv.description
    assert "Accuracy by group" in mv.description and "validation passed" in mv.description
    md = card_mod.card_markdown(card)
    for section in ("## Purpose", "## Data", "## Base model", "## Method and hyper-parameters", "## Training cost",
                    "## Evaluation (test split)", "## Gates", "## Approvals", "## Known limitations", "## Lineage"):
        assert section in md
    assert "missing" not in md.lower().replace("missing_lineage", "")

    # a decision refreshes the card and the description: approved, by whom, why
    people = people_now()
    approvals.approve("support-ticket-router", "1", people["reviewer"], "evidence reviewed")
    mv = _client().get_model_version("support-ticket-router", "1")
    assert "**approved**" in mv.description and "approved by reviewer" in mv.description
    logged_card = json.loads(open(_client().download_artifacts(mv.run_id, "card/card.json")).read())
    assert logged_card["status"] == "approved"
    assert [a["action"] for a in logged_card["approvals"]] == ["approved"]
    # the review form's evidence shows the card's summary and limitations
    from tasks.governance.evidence import evidence_markdown

    form = evidence_markdown("support-ticket-router", "1")
    assert "### Adapter card" in form and "route tickets to a team" in form and "- limitation:" in form

    # the technical file: Annex IV's sections over copies of this evidence, a person's items marked, and a zip
    out = tmp_path / "tf"
    assert main(["technical-file", "support-ticket-router/1", "--out", str(out)]) == 0
    index = (out / "index.md").read_text()
    assert [line for line in index.splitlines() if line.startswith("## ")] == [
        f"## {t}" for t, _ in technical_file.sections(set(), card)]
    for f in ("evidence/run/reports/mlbom.cdx.json", "evidence/run/config.yaml", "evidence/card/card.html",
              "evidence/run/validation/decision.json", "evidence/ledger/events.json", "evidence/run/reports/bias.json"):
        assert (out / f).is_file() and f"]({f})" in index, f
    assert "**NEEDS INPUT:** a copy of the EU declaration of conformity" in index
    assert (out / "evidence/run/signature/adapter.sig").is_file()  # the OpenSSF model-signing bundle
    assert "not recorded for this version" not in index
    events = json.loads((out / "evidence/ledger/events.json").read_text())
    assert [e["action"] for e in events] == ["registered", "approved"]
    import zipfile

    names = zipfile.ZipFile(tmp_path / "tf.zip").namelist()
    assert "tf/index.md" in names and "tf/evidence/card/card.md" in names
    # an existing folder is refused (exit 2) and left as it was
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert main(["technical-file", "support-ticket-router/1", "--out", str(out)]) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before


def _card(**purpose) -> card_mod.Card:
    fields = {k: None for k in card_mod.PURPOSE_FIELDS} | purpose
    return card_mod.Card(
        model="m", version="1", generated_at="2026-12-01T00:00:00+00:00", status="pending", review_due="",
        run_id="r1", purpose=fields, missing=[f"card.{k}" for k, v in fields.items() if v is None],
        stated_limitations=[], data={}, base={"id": "b", "revision": "x", "digest": "d"},
        method={"method": "lora", "trainable_params": "10", "trainable_fraction": "0.01",
                "task": "sequence_classification", "settings": {}}, cost={}, metrics={"test_macro_f1": 0.5},
        per_class=[], per_group=[], bias=[], gates=[{"gate": "bias", "outcome": "skipped", "reason": "no groups"}],
        approvals=[], limitations=[], lineage={}, links={"card": "runs:/r1/card/card.html"})


def test_fields_the_requester_left_empty_are_shown_as_missing_not_invented():
    card = _card(owner="team-a")
    md, summary, page = card_mod.card_markdown(card), card_mod.summary_markdown(card), card_mod.card_html(card)
    assert "**Owner:** team-a" in md
    for key in ("intended_use", "out_of_scope_use", "risk_class", "users"):
        assert f"**missing** — the requester sets `card.{key}`" in md
        assert f"(card.{key})" in page
    assert "**Intended use:** **missing**" in summary and "risk class:** **missing**" in summary
    assert "None" not in md and "None" not in summary
    assert "## Missing" in md and "`card.intended_use`" in md


def test_wilson_intervals_and_derived_limitations_come_from_the_recorded_counts():
    test = {"per_class": {"a": {"precision": 0.9, "recall": 0.95, "f1": 0.92, "support": 200},
                          "b": {"precision": 0.5, "recall": 0.4, "f1": 0.44, "support": 10}},
            "per_group": {"x": {"accuracy": 0.9, "macro_f1": 0.8, "n": 100}, "y": {"accuracy": 0.5, "n": 4}}}
    card = _card()
    card.per_class, card.per_group = card_mod.class_rows(test), card_mod.group_rows(test)
    b = next(r for r in card.per_class if r["label"] == "b")
    assert b["recall_ci"][0] < 0.4 < b["recall_ci"][1] and b["recall_ci"][1] - b["recall_ci"][0] > 0.4  # n=10: wide
    a = next(r for r in card.per_class if r["label"] == "a")
    assert a["recall_ci"][1] - a["recall_ci"][0] < 0.1
    limits = card_mod.derived_limitations(
        card, {"checks": [{"name": "vs champion", "judged": False, "detail": "no champion yet"}]},
        {"bias": {"min_group_size": 30}})
    text = "\n".join(limits)
    assert "groups too small to judge" in text and "y (4)" in text and "x (100)" not in text
    assert "recall below 0.80: b (0.40)" in text and "fewer than 30 test rows" in text
    assert "vs champion: no champion yet" in text and "gate bias skipped: no groups" in text


def test_the_technical_file_marks_what_a_person_must_write_and_what_the_requester_left_empty():
    card = _card(owner="team-a")
    present = {"evidence/run/reports/mlbom.cdx.json", "evidence/card/card.md"}
    secs = dict(technical_file.sections(present, card))
    assert len(secs) == 9 and list(secs)[7] == "8. EU declaration of conformity"
    general = secs["1. General description of the AI system"]
    assert [i.what for i in general if i.needs_input][:2] == [
        "the requester's `card.intended_use` (empty on the adapter card)",
        "the requester's `card.out_of_scope_use` (empty on the adapter card)"]
    assert not any("card.owner" in i.what for i in general)
    # evidence that was not recorded is not listed as if it were
    standards = secs["7. Standards and specifications applied"]
    assert standards[0].files == ["evidence/run/reports/mlbom.cdx.json"] and standards[1].files == []
    text = technical_file._index_markdown("m", "1", "now", list(secs.items()))
    assert "- OpenSSF model signing (Sigstore bundle, key mode): **not recorded for this version**" in text
