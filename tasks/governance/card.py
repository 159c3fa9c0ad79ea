"""The adapter card of one model version: what it is for (the requester's ``card:`` config section), the data it
saw, its base, method and cost, its evaluation per class and per group with confidence intervals, each gate's
decision, its approvals, and the limitations the evidence shows — all read from what the pipeline recorded (the
run's artifacts and metrics, the version's tags, the ledger; gathered in ``card_facts.py``). Nothing is typed twice
and nothing is invented: a ``card:`` field the requester left empty is listed as missing.

:func:`card_markdown` / :func:`card_html` render a card, :func:`summary_markdown` is the short form that becomes the
MLflow model version's description, and :func:`publish` logs ``card/card.{md,html,json}`` on the version's run and
sets the description. The register step publishes it, and every decision refreshes it.
"""

from __future__ import annotations

import html
import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from tasks.core.text import md, md_code
from tasks.governance import registry
from tasks.governance.card_facts import (BASE_REPORT, CARD_DIR, CARD_HTML, CARD_JSON, CARD_MD,  # noqa: F401
                                         CONFIDENCE, DATASET_REPORT, LOW_RECALL, MIN_SUPPORT, PURPOSE_FIELDS, Card,
                                         base_licence, base_model_facts, build, card_location, class_rows,
                                         derived_limitations, group_rows)

log = logging.getLogger("adaptrail")


# --- rendering ---------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _cell(x: Any, limit: int | None = None) -> str:
    """Recorded text (a reason, a label, a requester's statement) as literal Markdown: nothing in it renders."""
    return md(x, limit)


def _missing(value: str | None, key: str) -> str:
    return _cell(value) if value else f"**missing** — the requester sets `card.{key}` in the config"


def _env_text(env: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(env.items()) if not isinstance(v, (dict, list)))


def summary_markdown(card: Card) -> str:
    """The short card: the MLflow model version description (purpose, gates, group metrics, approval)."""
    p = card.purpose
    head = next(((k, v) for k, v in card.metrics.items() if k in ("test_macro_f1", "test_exact_match")), None)
    lines = [f"**{_cell(card.model)} v{_cell(card.version)}** · {_cell(card.method.get('method'))} adapter on "
             f"{_cell(card.base.get('id'))} · status **{_cell(card.status)}**"
             + (f" · review due {_cell(card.review_due)}" if card.review_due else ""), "",
             f"- **Intended use:** {_missing(p['intended_use'], 'intended_use')}",
             f"- **Out of scope:** {_missing(p['out_of_scope_use'], 'out_of_scope_use')}",
             f"- **Owner:** {_missing(p['owner'], 'owner')} · **risk class:** {_missing(p['risk_class'], 'risk_class')}",
             "- **Gates:** " + ", ".join(f"{_cell(g['gate'])} {_cell(g['outcome'])}" for g in card.gates)]
    if head:
        lines.append(f"- **Test {head[0].removeprefix('test_')}:** {head[1]:.4f}")
    if card.per_group:
        worst = min(card.per_group, key=lambda g: g["accuracy"] if g["accuracy"] is not None else 1.0)
        lines.append("- **Accuracy by group:** " + ", ".join(
            f"{_cell(g['group'])} {_f(g['accuracy'], 3)} (n={g['n']})" for g in card.per_group)
            + f"; lowest {_cell(worst['group'])} {_ci(worst['accuracy_ci'])}")
    last = card.approvals[-1] if card.approvals else None
    lines.append("- **Last decision:** " + (f"{_cell(last['action'])} by {_cell(' and '.join(last['approvers']))} "
                                            f"at {_cell(last['at'][:19])}: {_cell(last['reason'], 300)}"
                                            if last else "none yet"))
    if card.limitations or card.stated_limitations:
        lines.append(f"- **Limitations:** {len(card.limitations) + len(card.stated_limitations)} (see the card)")
    lines.append(f"\nFull card: `{card.links['card']}` (Markdown: `{CARD_DIR}/{CARD_MD}`)")
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _md_data(card: Card) -> list[str]:
    d = card.data
    L = ["## Data", f"- **Source:** {_cell(d.get('path') or d.get('source', '?'))}",
         f"- **Content digest (all splits):** `{d.get('digest') or card.lineage.get('lineage.dataset.digest', '?')}`"]
    if d.get("source_digest"):
        L.append(f"- **Source file digest:** `{d['source_digest']}`")
    splits = d.get("splits") or {}
    if splits:
        labels = sorted({lab for s in splits.values() for lab in s.get("per_class", {})})
        groups = sorted({g for s in splits.values() for g in s.get("per_group", {})})
        L += [""] + _md_table(["split", "rows", *(_cell(x) for x in labels)],
                              [[n, s["rows"], *(s.get("per_class", {}).get(x, 0) for x in labels)]
                               for n, s in splits.items()])
        if groups:
            L += ["", "Group distribution:", ""] + _md_table(
                ["split", *(_cell(g) for g in groups)],
                [[n, *(s.get("per_group", {}).get(g, 0) for g in groups)] for n, s in splits.items()])
    else:
        L.append("- rows per split and class: not recorded for this version (registered before the dataset card)")
    failed = [v for v in d.get("validation", []) if not v.get("passed")]
    L += ["", f"Validation: {len(d.get('validation', []))} checks, {len(failed)} failed"]
    L += [f"- failed: {_cell(v['name'])}: {_cell(v.get('detail', ''))}" for v in failed]
    L.append("PII: " + ("; ".join(f"{_cell(v['name'])}: {_cell(v.get('detail', ''))}" for v in d.get("pii", []))
                         or "no PII checks ran"))
    return L


def _md_base_method_cost(card: Card) -> list[str]:
    b, cost, m = card.base, card.cost, card.method
    L = ["## Base model", f"- **Id:** {_cell(b.get('id'))} · **revision:** {_cell(b.get('revision'))}",
         f"- **Digest (sha256 of its files):** `{b.get('digest')}`",
         f"- **Licence:** {_cell(b.get('licence') or 'unknown')} ({_cell(b.get('licence_source', ''))})",
         "", "## Method and hyper-parameters",
         f"- **Method:** {_cell(m.get('method'))} · trainable parameters {_cell(m.get('trainable_params'))} "
         f"({_cell(m.get('trainable_fraction'))} of the model) · task {_cell(m.get('task'))}", ""]
    L += _md_table(["setting", "value"], [[_cell(k), _cell(json.dumps(v))]
                                          for k, v in sorted(m.get("settings", {}).items())])
    L += ["", "## Training cost",
          f"- **Time:** {_f(cost.get('train_seconds'), 1)} s · **throughput:** {_f(cost.get('tokens_per_second'), 0)} "
          f"tokens/s · **peak memory:** {_f(cost.get('peak_memory_mib'), 0)} MiB (process RSS) · "
          f"**epochs:** {_f(cost.get('epochs_trained'), 0)} · **adapter:** {_f(cost.get('adapter_bytes'), 0)} bytes",
          "- **Hardware and software:** " + (_cell(_env_text(cost.get("environment") or {}))
                                             or "not recorded for this version")]
    return L


def _md_evaluation(card: Card) -> list[str]:
    L = ["## Evaluation (test split)"]
    L += [f"- {_cell(k)}: {_f(v)}" for k, v in card.metrics.items() if k.startswith("test_") and "." not in k]
    pct = int(CONFIDENCE * 100)
    if card.per_class:
        L += ["", f"Per class ({pct}% Wilson interval of recall):", ""] + _md_table(
            ["class", "precision", "recall", "recall CI", "F1", "support"],
            [[_cell(r["label"]), _f(r["precision"]), _f(r["recall"]), _ci(r["recall_ci"]), _f(r["f1"]),
              r["support"]] for r in card.per_class])
    if card.per_group:
        L += ["", f"Per group ({pct}% Wilson interval of accuracy):", ""] + _md_table(
            ["group", "n", "accuracy", "accuracy CI", "macro-F1"],
            [[_cell(g["group"]), g["n"], _f(g["accuracy"]), _ci(g["accuracy_ci"]), _f(g["macro_f1"])]
             for g in card.per_group])
    if card.bias:
        L += ["", "Bias checks:", ""] + _md_table(
            ["check", "value", "threshold", "judged", "passed", "detail"],
            [[_cell(r["name"]), _f(r["value"]), _cell(_f(r["threshold"])), r["judged"], r["passed"],
              _cell(r["detail"] or "")] for r in card.bias])
    return L


def _md_decisions(card: Card) -> list[str]:
    L = ["## Gates"] + _md_table(["gate", "outcome", "reason"], [[_cell(g["gate"]), _cell(g["outcome"]),
                                                                  _cell(g["reason"])] for g in card.gates])
    L += ["", "## Approvals", f"Review due: {_cell(card.review_due or '-')}", ""]
    L += [f"- seq {a['seq']} · {_cell(a['at'][:19])} · **{_cell(a['action'])}** by "
          f"{_cell(' and '.join(a['approvers']))}: {_cell(a['reason'])}" for a in card.approvals] or \
        ["- no decision yet"]
    L += ["", "## Known limitations"]
    L += [f"- {_cell(x)} (stated by the requester)" for x in card.stated_limitations]
    L += [f"- {_cell(x)}" for x in card.limitations]
    if not card.stated_limitations and not card.limitations:
        L.append("- none stated, none shown by the evidence")
    if card.missing:
        L += ["", "## Missing", "The requester has not stated: " + ", ".join(f"`{m}`" for m in card.missing)
              + ". Set them in the config's `card:` section for the next version."]
    return L


def card_markdown(card: Card) -> str:
    """The whole card as Markdown (every recorded text escaped: nothing a requester or reviewer typed renders)."""
    p = card.purpose
    L = [f"# Adapter card: {_cell(card.model)} v{_cell(card.version)}", "",
         f"Status **{_cell(card.status)}**; review due {_cell(card.review_due or '-')}; generated "
         f"{card.generated_at} from the run `{card.run_id}` and the approval ledger.", "", "## Purpose"]
    L += [f"- **{title}:** {_missing(p[k], k)}" for k, title in PURPOSE_FIELDS.items()]
    for section in (_md_data, _md_base_method_cost, _md_evaluation, _md_decisions):
        L += [""] + section(card)
    L += ["", "## Lineage"] + [f"- `{k}`: {md_code(v)}" for k, v in card.lineage.items()]
    L += [f"- {k}: {md_code(v)}" for k, v in card.links.items()]
    return "\n".join(L) + "\n"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1000px;margin:0 auto;padding:24px}h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 20px;margin:12px 0}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-bottom:1px solid #eaecf0;padding:4px 6px;
text-align:left;vertical-align:top}code{font:12px ui-monospace,monospace;word-break:break-all}
.missing{color:#b42318;font-weight:600}.muted{color:#667085;font-size:13px}
.passed{color:#067647;font-weight:600}.failed{color:#b42318;font-weight:600}.skipped{color:#b54708;font-weight:600}"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; ``head`` is escaped here, cells must already be HTML."""
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _html_purpose_data(card: Card) -> list[str]:
    p, d = card.purpose, card.data

    def val(v: str | None, key: str) -> str:
        return _e(v) if v else f'<span class="missing">missing</span> <span class=muted>(card.{_e(key)})</span>'

    splits = d.get("splits") or {}
    labels = sorted({lab for s in splits.values() for lab in s.get("per_class", {})})
    groups = sorted({g for s in splits.values() for g in s.get("per_group", {})})
    per_class = _table(["split", "rows", *labels], [[_e(n), s["rows"], *[s.get("per_class", {}).get(x, 0)
                                                                         for x in labels]] for n, s in splits.items()])
    per_group = _table(["split", *groups], [[_e(n), *[s.get("per_group", {}).get(g, 0) for g in groups]]
                                            for n, s in splits.items()])
    return ["<section><h2>Purpose</h2>" + _table(["", ""], [[_e(t), val(p[k], k)] for k, t in PURPOSE_FIELDS.items()])
            + "</section>",
            "<section><h2>Data</h2>"
            f"<p>Source <code>{_e(d.get('path') or d.get('source', '?'))}</code><br>content digest <code>"
            f"{_e(d.get('digest', '?'))}</code></p>"
            + (per_class if splits else "<p class=muted>rows per class not recorded</p>")
            + (per_group if groups else "") + "<h3>Validation and PII</h3>"
            + _table(["check", "passed", "detail"], [[_e(v["name"]), _pf(v.get("passed")), _e(v.get("detail"))]
                                                   for v in d.get("validation", [])]) + "</section>"]


def _html_base_method(card: Card) -> list[str]:
    b, cost, m = card.base, card.cost, card.method
    return [
        "<section><h2>Base model</h2>" + _table(["", ""], [
            ["id", f"<code>{_e(b.get('id'))}</code>"], ["revision", f"<code>{_e(b.get('revision'))}</code>"],
            ["digest", f"<code>{_e(b.get('digest'))}</code>"],
            ["licence", f"{_e(b.get('licence') or 'unknown')} <span class=muted>({_e(b.get('licence_source'))})"
                        "</span>"]]) + "</section>",
        "<section><h2>Method and training cost</h2>" + _table(["", ""], [
            ["method", _e(m.get("method"))], ["trainable parameters", _e(m.get("trainable_params"))],
            ["trainable fraction", _e(m.get("trainable_fraction"))],
            ["training time (s)", _e(_f(cost.get("train_seconds"), 1))],
            ["tokens/s", _e(_f(cost.get("tokens_per_second"), 0))],
            ["peak memory (MiB, process RSS)", _e(_f(cost.get("peak_memory_mib"), 0))],
            ["hardware and software", _e(_env_text(cost.get("environment") or {}) or "not recorded")]])
        + "<h3>Hyper-parameters</h3>"
        + _table(["setting", "value"], [[_e(k), f"<code>{_e(json.dumps(v))}</code>"]
                                        for k, v in sorted(m.get("settings", {}).items())]) + "</section>"]


def _html_evaluation(card: Card) -> list[str]:
    ev = "<section><h2>Evaluation (test split)</h2>" + _table(
        ["metric", "value"], [[_e(k), _e(_f(v))] for k, v in card.metrics.items() if k.startswith("test_")
                              and "." not in k])
    if card.per_class:
        ev += "<h3>Per class (95% Wilson interval of recall)</h3>" + _table(
            ["class", "precision", "recall", "recall CI", "F1", "support"],
            [[_e(r["label"]), _f(r["precision"]), _f(r["recall"]), _ci(r["recall_ci"]), _f(r["f1"]), r["support"]]
             for r in card.per_class])
    if card.per_group:
        ev += "<h3>Per group (95% Wilson interval of accuracy)</h3>" + _table(
            ["group", "n", "accuracy", "accuracy CI", "macro-F1"],
            [[_e(g["group"]), g["n"], _f(g["accuracy"]), _ci(g["accuracy_ci"]), _f(g["macro_f1"])]
             for g in card.per_group])
    if card.bias:
        ev += "<h3>Bias checks</h3>" + _table(["check", "value", "threshold", "judged", "passed", "detail"], [
            [_e(r["name"]), _e(_f(r["value"])), _e(_f(r["threshold"])), _e(r["judged"]), _pf(r["passed"]),
             _e(r["detail"])] for r in card.bias])
    return [ev + "</section>"]


def _html_decisions(card: Card) -> list[str]:
    lim = [f"<li>{_e(x)} <span class=muted>(stated by the requester)</span></li>" for x in card.stated_limitations]
    lim += [f"<li>{_e(x)}</li>" for x in card.limitations]
    return [
        "<section><h2>Gates</h2>" + _table(["gate", "outcome", "reason"], [
            [_e(g["gate"]), f'<span class="{_e(g["outcome"])}">{_e(g["outcome"])}</span>', _e(g["reason"])]
            for g in card.gates]) + "</section>",
        "<section><h2>Approvals</h2>" + (_table(["seq", "at", "action", "by", "reason"], [
            [a["seq"], _e(a["at"][:19]), _e(a["action"]), _e(" and ".join(a["approvers"])), _e(a["reason"])]
            for a in card.approvals]) if card.approvals else "<p>no decision yet</p>")
        + f"<p>Review due: {_e(card.review_due or '-')}</p></section>",
        "<section><h2>Known limitations</h2><ul>" + ("".join(lim) or "<li>none stated, none shown by the evidence"
                                                     "</li>") + "</ul>"
        + (f'<p class="missing">Missing: {_e(", ".join(card.missing))}</p>' if card.missing else "") + "</section>",
        "<section><h2>Lineage</h2>" + _table(["", ""], [[_e(k), f"<code>{_e(v)}</code>"] for k, v in
                                                        [*card.lineage.items(), *card.links.items()]]) + "</section>"]


def card_html(card: Card) -> str:
    """The whole card as a self-contained HTML page (the Markdown's sections, as tables; everything escaped)."""
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Adapter card {_e(card.model)} "
             f"v{_e(card.version)}</title><style>{_CSS}</style></head><body><main>",
             f"<h1>Adapter card: {_e(card.model)} v{_e(card.version)}</h1><div class=muted>status <b>"
             f"{_e(card.status)}</b>; review due {_e(card.review_due or '-')}; generated {_e(card.generated_at)} from "
             f"run <code>{_e(card.run_id)}</code> and the approval ledger</div>"]
    for section in (_html_purpose_data, _html_base_method, _html_evaluation, _html_decisions):
        parts += section(card)
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _pf(passed: Any) -> str:
    return '<span class="passed">passed</span>' if passed else '<span class="failed">failed</span>'


# --- publishing --------------------------------------------------------------------------------------------


def write(card: Card, out_dir: Path) -> dict[str, Path]:
    """card.md, card.html and card.json under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / CARD_MD, "html": out_dir / CARD_HTML, "json": out_dir / CARD_JSON}
    paths["md"].write_text(card_markdown(card), encoding="utf-8")
    paths["html"].write_text(card_html(card), encoding="utf-8")
    paths["json"].write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True, default=str) + "\n",
                             encoding="utf-8")
    return paths


def publish(model: str, version: str, now: datetime | None = None) -> Card:
    """Build the card, log it on the version's run (``card/``, replacing the previous one) and set the model
    version's description to its summary."""
    card = build(model, version, now)
    c = registry.client()
    with tempfile.TemporaryDirectory(prefix="adaptrail-card-") as tmp:
        write(card, Path(tmp) / CARD_DIR)
        registry.log_path(c, card.run_id, Path(tmp) / CARD_DIR, CARD_DIR)
    c.update_model_version(model, str(version), description=summary_markdown(card))
    return card


def refresh(model: str, version: str) -> None:
    """Publish the card again after a decision; a failure is a warning (the decision stands, the ledger has it)
    naming the command that publishes it later."""
    try:
        publish(model, version)
    except Exception as err:  # noqa: BLE001 - the card mirrors the record; it never undoes a decision
        log.warning("the adapter card of %s v%s was not refreshed (%s); publish it with `adaptrail card %s/%s`",
                    model, version, err, model, version)
