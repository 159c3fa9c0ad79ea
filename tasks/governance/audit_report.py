"""The audit's report: JSON (with its own digest), CSV (one row per version), a self-contained HTML page, the
Markdown summary for Prefect, and the MLflow run (experiment ``adaptrail-audits``) that keeps them.

The digest is sha256 over the canonical JSON of the report without its ``digest`` field; it is printed in the
HTML, written to ``report.sha256`` and logged, so a later reader can recompute it (:func:`verify_report`).
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

from tasks.governance import audit_answers, registry
from tasks.governance.audit import METRICS, SEVERITIES, Audit, severity_counts, verdict  # noqa: F401
from tasks.core.errors import InputError
from tasks.core.canonical import json_sha256
from tasks.core.names import AUDIT_EXPERIMENT, RUN_TAG_AUDIT_HEAD, RUN_TAG_AUDIT_LEDGER  # noqa: F401
from tasks.core.text import csv_cell, md

JSON_NAME, CSV_NAME, HTML_NAME, DIGEST_NAME = "audit.json", "audit.csv", "audit.html", "report.sha256"
CSV_COLUMNS = ("model", "version", "status", "champion", "created_at", "review_due", "gate.validation", "gate.bias",
               "gate.regression", *METRICS, "approved_by", "approved_at", "override", "adapter_intact",
               "tags_agree", "missing_lineage", "findings", "worst_severity", "dataset_digest", "base_model",
               "base_model_revision", "base_model_digest", "code_version", "flow_run_id", "run_id",
               "reproduced", "monitoring_last", "monitoring_runs")


def report_data(audit: Audit, fail_on: str = "high") -> dict[str, Any]:
    """The report as plain JSON-able data, with verdict, counts and its digest."""
    data = audit.to_dict()
    name, code = verdict(audit.findings, fail_on)
    data["summary"] = {"verdict": name, "exit_code": code, "fail_on": fail_on, "versions": len(audit.versions),
                       "models": len({v.model for v in audit.versions}), "counts": severity_counts(audit.findings),
                       "ledger_head_hash": audit.chain["head_hash"], "ledger_length": audit.chain["length"],
                       "chain_ok": audit.chain["ok"], "policy": policy_text(audit.trust),
                       "expired_by_audit": [f"{v.model} v{v.version}" for v in audit.versions if v.expired_by_audit]}
    data["answers"] = audit_answers.answers(data)
    data["digest"] = report_digest(data)
    return data


def policy_text(trust: dict[str, Any]) -> str:
    """One line on who may decide and how many events do not count."""
    if not trust.get("policy_digest"):
        return "no policy in the ledger: decisions are not signed"
    bad = len(trust.get("problems", []))
    return (f"policy {trust['policy_digest'][:16]}... (ledger seq {trust['policy_seq']}); approvers "
            f"{', '.join(trust['approvers']) or 'none'}; admins {', '.join(trust['admins'])}; "
            f"{len(trust.get('unsigned', []))} events from before signing; {bad} events that do not count")


def report_digest(data: dict[str, Any]) -> str:
    return json_sha256({k: v for k, v in data.items() if k != "digest"})


def verify_report(json_path: Path) -> bool:
    """True when the JSON report's content still has the digest it states (and ``report.sha256`` agrees)."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    sidecar = Path(json_path).with_name(DIGEST_NAME)
    ok = report_digest(data) == data.get("digest")
    return ok and (not sidecar.exists() or sidecar.read_text().split()[0] == data["digest"])


def write_reports(data: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write audit.json, audit.csv, audit.html and report.sha256 under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the report folder {out_dir} ({err}); pass --out DIR you can write") from None
    paths = {"json": out_dir / JSON_NAME, "csv": out_dir / CSV_NAME, "html": out_dir / HTML_NAME,
             "digest": out_dir / DIGEST_NAME}
    paths["json"].write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths["digest"].write_text(f"{data['digest']}  sha256 of {JSON_NAME} content without its digest field\n")
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in csv_rows(data))
    paths["html"].write_text(render_html(data), encoding="utf-8")
    return paths


def csv_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per version, flat, for spreadsheets."""
    by_version: dict[tuple[str, str], list[dict]] = {}
    for f in data["findings"]:
        by_version.setdefault((f["model"], f["version"]), []).append(f)
    rows = []
    for v in data["versions"]:
        found = by_version.get((v["model"], v["version"]), [])
        approvals = [d for d in v["decisions"] if d["action"] in ("approved", "overridden", "reviewed")]
        last = approvals[-1] if approvals else None
        lin = {k.removeprefix("adaptrail.lineage."): val for k, val in v["lineage"].items()}
        rows.append({
            "model": v["model"], "version": v["version"], "status": v["status"], "champion": v["champion"],
            "created_at": v["created_at"], "review_due": v["review_due"],
            **{f"gate.{g}": o for g, o in v["gates"].items()}, **{m: v["metrics"].get(m) for m in METRICS},
            "approved_by": ", ".join(last["approvers"]) if last else "", "approved_at": last["at"] if last else "",
            "override": any(d["action"] == "overridden" for d in v["decisions"]),
            "adapter_intact": not v["integrity"], "tags_agree": not v["disagreements"],
            "missing_lineage": ", ".join(v["missing_lineage"]), "findings": len(found),
            "worst_severity": min((f["severity"] for f in found), key=SEVERITIES.index, default=""),
            "dataset_digest": lin.get("dataset.digest", ""), "base_model": lin.get("base_model", ""),
            "base_model_revision": lin.get("base_model.revision", ""),
            "base_model_digest": lin.get("base_model.digest", ""), "code_version": lin.get("code.version", ""),
            "flow_run_id": lin.get("flow_run_id", ""), "run_id": v["run_id"],
            "reproduced": reproduction_cell(v.get("reproduction")),
            "monitoring_last": monitoring_cell(v.get("monitoring") or []), "monitoring_runs": len(v.get("monitoring")
                                                                                                  or []),
        })
    return rows


def summary_markdown(data: dict[str, Any]) -> str:
    """Verdict, counts, chain and the findings table: the Prefect run page's story."""
    s = data["summary"]
    counts = " · ".join(f"{k}: **{n}**" for k, n in s["counts"].items())
    lines = [f"# Compliance audit: {s['verdict'].upper()}", "",
             f"{s['versions']} versions of {s['models']} models; findings {counts} (fail on {s['fail_on']}+).", "",
             f"Ledger: {s['ledger_length']} events, chain {'verifies' if s['chain_ok'] else '**BROKEN**'}, "
             f"head `{s['ledger_head_hash']}`.", f"Signed decisions: {md(s['policy'])}.",
             f"Report digest: `{data['digest']}`.", ""]
    lines += ["## What an auditor asks", "| question | answer |", "|---|---|"]
    lines += [f"| {md(a['question'])} | {md(a['answer'])} |" for a in data.get("answers", [])] + [""]
    pit = data.get("point_in_time")
    if pit:
        lines += [md(point_in_time_text(pit)), ""]
    if data["findings"]:
        lines += ["| severity | model | version | finding |", "|---|---|---|---|"]
        lines += [f"| {f['severity']} | {md(f['model'])} | {md(f['version'])} | {md(f['message'])} |"
                  for f in data["findings"]]
    return "\n".join(lines)


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-version table published as a Prefect table artifact."""
    keep = ("model", "version", "status", "champion", "test_macro_f1", "approved_by", "adapter_intact",
            "tags_agree", "findings", "worst_severity")
    return [{k: r[k] for k in keep} for r in csv_rows(data)]


def point_in_time_text(pit: dict[str, Any]) -> str:
    champ, when = pit["champion"], pit.get("asked") or pit["as_of"]
    if champ is None:
        return f"On {when}, {pit['model']} had no champion."
    return (f"On {when}, the champion of {pit['model']} was v{champ['version']}, "
            f"{champ['action']} by {' and '.join(champ['approvers'])} at {champ['at']} (ledger seq {champ['seq']}): "
            f"{champ['reason']}")


def log_to_mlflow(data: dict[str, Any], paths: dict[str, Path]) -> str:
    """One run in experiment ``adaptrail-audits`` holding the reports, counts, verdict, digest and head hash."""
    c = registry.client()
    s = data["summary"]
    run_id = registry.start_run(c, AUDIT_EXPERIMENT, f"audit {data['generated_at'][:10]}", {
        "adaptrail.audit.verdict": s["verdict"], "adaptrail.audit.digest": data["digest"],
        RUN_TAG_AUDIT_HEAD: s["ledger_head_hash"], RUN_TAG_AUDIT_LEDGER: data["ledger_id"]})
    registry.log_params(c, run_id, {"since": data["since"], "until": data["until"], "model": data["model"],
                                    "fail_on": s["fail_on"]})
    registry.log_metrics(c, run_id, {"versions": s["versions"], "ledger_length": s["ledger_length"],
                                     **{f"findings.{k}": n for k, n in s["counts"].items()}})
    for p in paths.values():
        registry.log_path(c, run_id, p, "audit")
    registry.end_run(c, run_id, True)
    return run_id


# --- HTML ------------------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:24px} h2{margin:32px 0 8px;font-size:20px} h3{margin:18px 0 6px;font-size:16px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 20px;margin:12px 0}
.verdict{display:inline-block;padding:4px 12px;border-radius:6px;font-weight:700;color:#fff}
.v-fail{background:#b42318}.v-pass{background:#067647}.v-pass-with-findings{background:#b54708}
.chips span{display:inline-block;margin:4px 8px 0 0;padding:2px 10px;border-radius:12px;font-size:13px}
.critical{background:#fee4e2;color:#912018}.high{background:#fef0c7;color:#93370d}
.medium{background:#eff8ff;color:#175cd3}.low{background:#f2f4f7;color:#344054}
code{font:12px ui-monospace,Menlo,monospace;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:13px}
td,th{border-bottom:1px solid #eaecf0;padding:5px 6px;text-align:left;vertical-align:top}
th{color:#475467;font-weight:600}
.st{padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.st-approved{background:#dcfae6;color:#067647}.st-rejected{background:#fee4e2;color:#912018}
.st-pending{background:#f2f4f7;color:#344054}.st-expired{background:#fef0c7;color:#93370d}
.st-revoked{background:#fde2e1;color:#7a271a}
.tl{border-left:3px solid #d0d5dd;margin-left:8px;padding-left:14px}
.tl .ver{margin:10px 0}.muted{color:#667085;font-size:13px}
.decision{font-size:13px;margin:2px 0}.star{color:#dc6803}
"""


def render_html(data: dict[str, Any]) -> str:
    """A self-contained page: summary, point-in-time answer, then per model its trend, timeline and findings."""
    s, e = data["summary"], html_escape
    counts = "".join(f'<span class="{k}">{k}: {n}</span>' for k, n in s["counts"].items())
    expired = ", ".join(s["expired_by_audit"]) or "none"
    window = f"{data['since'] or 'the beginning'} to {data['until'] or data['generated_at']}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>adaptrail compliance audit {e(data['generated_at'][:10])}</title><style>{_CSS}</style></head>",
        "<body><main>",
        f"<h1>Compliance audit</h1><div class=muted>generated {e(data['generated_at'])}; scope {e(window)}; "
        f"model {e(data['model'] or 'all')}</div>",
        '<div class="card">',
        f'<span class="verdict v-{s["verdict"].replace(" ", "-")}">{e(s["verdict"].upper())}</span> '
        f"{s['versions']} versions of {s['models']} models; fails on <b>{e(s['fail_on'])}</b> or worse",
        f'<div class="chips">{counts}</div>',
        f"<p>Ledger: {s['ledger_length']} events, chain "
        + ("<b>verifies</b>" if s["chain_ok"] else f"<b style=color:#b42318>BROKEN</b>: {e(data['chain']['problem'])}")
        + f"<br>Ledger head hash <code>{e(s['ledger_head_hash'])}</code><br>Signed decisions: {e(s['policy'])}"
        f"<br>Report digest <code>{e(data['digest'])}</code> <span class=muted>(sha256 of {JSON_NAME} without its "
        f"digest field; also in {DIGEST_NAME})</span><br>Expired by this audit: {e(expired)}</p></div>",
    ]
    parts.append(_answers_section(data))
    if data.get("point_in_time"):
        parts.append(f'<div class="card"><h3>Point in time</h3>{e(point_in_time_text(data["point_in_time"]))}</div>')
    global_findings = [f for f in data["findings"] if not f["model"]]
    if global_findings:
        parts.append(_findings_table(global_findings))
    for model in sorted({v["model"] for v in data["versions"]}):
        parts.append(_model_section(model, data))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _model_section(model: str, data: dict[str, Any]) -> str:
    e = html_escape
    versions = [v for v in data["versions"] if v["model"] == model]
    findings = [f for f in data["findings"] if f["model"] == model]
    trend = "".join(f"<div>{e(m)} {sparkline([v['metrics'].get(m) for v in versions])}</div>" for m in METRICS)
    out = [f'<h2>{e(model)}</h2><div class="card"><h3>Metrics across versions</h3>{trend}</div>']
    if findings:
        out.append(_findings_table(findings))
    out.append('<div class="card"><h3>Timeline</h3><div class="tl">')
    for v in versions:
        star = ' <span class="star" title="champion">&#9733; champion</span>' if v["champion"] else ""
        gates = " ".join(f"{e(g)}={e(o)}" for g, o in v["gates"].items())
        mets = " ".join(f"{e(m)}={_fmt(v['metrics'].get(m))}" for m in METRICS)
        out.append(f'<div class="ver"><b>v{e(v["version"])}</b> <span class="st st-{e(v["status"])}">'
                   f'{e(v["status"])}</span>{star} <span class=muted>created {e(v["created_at"])}; '
                   f'review due {e(v["review_due"] or "-")}; gates {gates}; {mets}</span>')
        for d in v["decisions"]:
            out.append(f'<div class="decision">{e(d["at"][:19])} &middot; <b>{e(d["action"])}</b> by '
                       f'{e(" and ".join(d["approvers"]))}: {e(d["reason"])} <span class=muted>(seq {d["seq"]})'
                       f"</span></div>")
        out.append(_reproduction_line(v.get("reproduction")))
        out.append(_monitoring_lines(v.get("monitoring") or []))
        out.append(_evidence_lines(v))
        out.append("</div>")
    out.append("</div></div>")
    return "".join(out)


def reproduction_cell(r: dict[str, Any] | None) -> str:
    """The version's last ``adaptrail reproduce``: '' (never), ``identical AT`` or ``differs AT``."""
    return "" if not r else f"{'identical' if r['identical'] else 'differs'} {r['at']}"


def monitoring_cell(history: list[dict[str, Any]]) -> str:
    """The version's last monitoring result: '' (never monitored) or ``OUTCOME AT``."""
    return f"{history[-1]['outcome']} {history[-1]['at']}" if history else ""


def _monitoring_lines(history: list[dict[str, Any]]) -> str:
    """The version's monitoring history (last result first, then the earlier ones), or that it was never monitored."""
    e = html_escape
    if not history:
        return '<div class="decision muted">monitoring: never monitored (<code>adaptrail monitor</code>)</div>'
    rows = []
    for h in reversed(history):
        what = e(", ".join(h["breaches"])) if h["breaches"] else "no breach"
        state = " &middot; <b>awaiting review</b>" if h.get("open") else ""
        rows.append(f'<div class="decision">monitoring {e(h["at"][:19])}: <b>{e(h["outcome"])}</b> on '
                    f'{e(h["rows"])} texts ({what}){state}, run <code>{e(h["run_id"])}</code> '
                    f'<span class=muted>(seq {h["seq"]})</span></div>')
    return "".join(rows)


def _reproduction_line(r: dict[str, Any] | None) -> str:
    """One line per version: its last reproduction (re-trained from its lineage), or that there was none."""
    e = html_escape
    if not r:
        return '<div class="decision muted">reproduction: never re-trained (<code>adaptrail reproduce</code>)</div>'
    what = ("<b>byte-identical</b>" if r["identical"] else
            f"<b>not byte-identical</b> ({e(', '.join(r['files_differ']) or 'digest differs')}; metrics "
            f"{e(', '.join(f'{k} {d:+.4f}' for k, d in r['metric_differences'].items()) or 'n/a')})")
    return (f'<div class="decision">reproduction {e(r["at"][:19])}: {what}, asked by {e(r["requested_by"])}, new '
            f'run <code>{e(r["run_id"])}</code> <span class=muted>(seq {r["seq"]})</span></div>')


def _answers_section(data: dict[str, Any]) -> str:
    """The standard questions with this registry's answers, each with the lines behind it (folded)."""
    e = html_escape
    rows = "".join(
        f"<tr><td><b>{e(a['question'])}</b></td><td>{e(a['answer'])}"
        + (f"<details{' open' if len(a['details']) <= 8 else ''}><summary class=muted>{len(a['details'])} "
           f"line{'s' if len(a['details']) != 1 else ''}</summary><ul>"
           + "".join(f"<li>{e(x)}</li>" for x in a["details"]) + "</ul></details>" if a["details"] else "")
        + "</td></tr>" for a in data.get("answers", []))
    return f'<div class="card" id="answers"><h3>What an auditor asks</h3><table>{rows}</table></div>'


def _evidence_lines(v: dict[str, Any]) -> str:
    """Under a version in the timeline: its lineage, its integrity as this audit checked it, its group metrics
    and its card."""
    e, lin = html_escape, {k.removeprefix("adaptrail.lineage."): x for k, x in (v.get("lineage") or {}).items()}
    ms = v.get("model_signing") or {}
    integrity = ("adapter re-hashed: matches the registered digest" if not v.get("integrity") else
                 "adapter re-hashed: <b style=color:#b42318>DOES NOT MATCH</b>") + "; signature: " + (
        "not checked" if not ms else "verifies" if ms.get("ok") and not ms.get("legacy") else e(ms.get("detail", "")))
    integrity += "; tags agree with the ledger" if not v.get("disagreements") else "; tags DISAGREE with the ledger"
    groups = ", ".join(f"{e(k.removeprefix('bias.'))} {x:.3f}" for k, x in (v.get("group_metrics") or {}).items())
    card = v.get("card") or {}
    link = (f'<a href="{e(card["file"])}">adapter card</a> <span class=muted>(sha256 {e(card["sha256"][:12])}…; '
            f'{e(card["artifact"])})</span>' if card.get("file") else
            "no adapter card (registered before cards)")
    return (f'<div class="muted">lineage: data <code>{e(lin.get("dataset.digest", "")[:16])}</code>; base '
            f'{e(lin.get("base_model", "?"))} @ {e(lin.get("base_model.revision", "?"))} <code>'
            f'{e(lin.get("base_model.digest", "")[:16])}</code>; code {e(lin.get("code.version", "?"))}; flow run '
            f'<code>{e(lin.get("flow_run_id", "?"))}</code></div>'
            f'<div class="muted">integrity: {integrity}</div>'
            + (f'<div class="muted">group metrics: {groups}</div>' if groups else "")
            + f'<div class="muted">{link}</div>')


def _findings_table(findings: list[dict[str, Any]]) -> str:
    e = html_escape
    rows = "".join(f'<tr><td><span class="st {e(f["severity"])}">{e(f["severity"])}</span></td>'
                   f'<td>{e(f["model"] and "v" + f["version"])}</td><td>{e(f["code"])}</td><td>{e(f["message"])}'
                   f"</td></tr>" for f in findings)
    return (f'<div class="card"><h3>Findings ({len(findings)})</h3><table><tr><th>severity</th><th>version</th>'
            f"<th>kind</th><th>what</th></tr>{rows}</table></div>")


def sparkline(values: list[float | None], width: int = 320, height: int = 40) -> str:
    """Inline SVG bars, one per version (a missing value is a grey stub), scaled to the min..max of the values."""
    known = [x for x in values if x is not None]
    if not known:
        return '<span class="muted">no values</span>'
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    step = width / max(len(values), 1)
    bars = []
    for i, x in enumerate(values):
        h = 3 if x is None else 6 + (height - 8) * (x - lo) / span
        color = "#d0d5dd" if x is None else "#2e90fa"
        title = "n/a" if x is None else f"{x:.4f}"
        bars.append(f'<rect x="{i * step:.2f}" y="{height - h:.2f}" width="{max(step - 1, 0.5):.2f}" '
                    f'height="{h:.2f}" fill="{color}"><title>{title}</title></rect>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">{"".join(bars)}'
            f'</svg> <span class="muted">{lo:.4f} .. {hi:.4f}</span>')


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def html_escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))
