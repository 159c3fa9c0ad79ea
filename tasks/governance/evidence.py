"""The evidence view of one version, as a reviewer reads it (the Prefect review form shows it): gates, key metrics
vs the champion, lineage, the ledger, disagreements and the rules."""

from __future__ import annotations

from tasks.core.names import ALIAS_CHAMPION, ARTIFACT_REPORTS, GATES, Tag
from tasks.core.text import md, md_code
from tasks.governance import card, registry
from tasks.governance import trust
from tasks.governance.ledger import Ledger
from tasks.governance.ledger_view import disagreements, identity_of

METRICS = ("test_macro_f1", "test_accuracy", "validation_macro_f1", "test_exact_match", "test_perplexity")
LEDGER_ROWS = 8


def _gate_reasons(c, run_id: str | None) -> dict[str, str]:
    """Each gate's reason from the run's ``reports/gates.json`` ({} when the run has none)."""
    gates = registry.read_run_json(c, run_id, f"{ARTIFACT_REPORTS}/gates.json") if run_id else None
    return {d["gate"]: d.get("reason", "") for d in gates or []}


def _cell(text: str, limit: int = 300) -> str:
    """Text safe inside a Markdown table cell (and in the review form): literal, one line, at most ``limit``."""
    return md(text, limit)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def evidence_markdown(model: str, version: str) -> str:
    """What a reviewer needs in the form: gates, key metrics vs the champion, lineage, the ledger, the rules."""
    c = registry.client()
    mv = registry.model_version(c, model, version)
    tags = mv.tags
    current = registry.version_by_alias(c, model, ALIAS_CHAMPION)
    # compared with the champion, unless this version is the champion (then there is nothing to compare it with)
    champion = current if current is not None and str(current.version) != str(version) else None
    with Ledger() as led:
        model_events = trust.read(led).events(model=model)
    events = [e for e in model_events if e.version == str(version)]
    mine = registry.run_metrics(c, mv.run_id) or {}
    theirs = (registry.run_metrics(c, champion.run_id) if champion else None) or {}
    reasons = _gate_reasons(c, mv.run_id)
    built = card.build(model, str(version))
    lines = [f"## Review {model} v{version}",
             f"Status **{_cell(tags.get(Tag.APPROVAL_STATUS, '?'))}** · "
             f"requested by **{_cell(tags.get(Tag.REQUESTED_BY, '?'))}** · "
             f"flow run {md_code(tags.get(Tag.FLOW_RUN_ID, '?'))}",
             "", "### Adapter card", card.summary_markdown(built)]
    lines += [f"- limitation: {_cell(x, 400)}" for x in [*built.stated_limitations, *built.limitations]]
    lines += ["", "### Gates", "| gate | outcome | reason |", "|---|---|---|"]
    lines += [f"| {g} | {_cell(tags.get(Tag.gate(g), '?'))} | {_cell(reasons.get(g, ''))} |" for g in GATES]
    ch = f"v{champion.version}" if champion else ("none" if current is None else "this version is the champion")
    lines += ["", f"### Metrics vs champion ({ch}; each scored on its own run's test split — the regression "
              "gate compares them on the same split)", f"| metric | v{version} | {ch if champion or current is None else 'champion'} | change |", "|---|---|---|---|"]
    for m in METRICS:
        a, b = mine.get(m), theirs.get(m)
        if a is None and b is None:
            continue  # the other task type's metric
        lines.append(f"| {m} | {_fmt(a)} | {_fmt(b)} | {_fmt(a - b) if a is not None and b is not None else 'n/a'} |")
    lines += ["", "### Lineage"]
    for key in (Tag.DATASET_DIGEST, Tag.BASE_MODEL, Tag.BASE_MODEL_REVISION, Tag.BASE_MODEL_DIGEST, Tag.CODE_VERSION,
                Tag.ADAPTER_DIGEST, Tag.PEFT_METHOD, Tag.PEFT_TRAINABLE_PARAMS):
        lines.append(f"- `{key.removeprefix('adaptrail.')}`: {md_code(tags.get(key, '?'))}")
    lines += ["", "### Ledger", "| seq | at | action | actor | reason |", "|---|---|---|---|---|"]
    lines += [f"| {e.seq} | {e.at} | {e.action} | {_cell(e.actor)} | {_cell(e.reason, 120)} |"
              for e in events[-LEDGER_ROWS:]]
    problems = disagreements(model, str(version), tags, model_events,
                             str(current.version) if current else None, identity_of(mv))
    if problems:
        lines += ["", "### MLflow disagrees with the ledger (the decision repairs it from the ledger first)"]
        lines += [f"- {_cell(p, 1000)}" for p in problems]
    lines += ["", "### Rules", "The approver must be on the allow-list and must not be the requester. A version "
              "whose gates failed is approved only with *override*, a reason and a second, distinct approver. "
              f"Approving moves alias `{ALIAS_CHAMPION}` to this version."]
    return "\n".join(lines)
