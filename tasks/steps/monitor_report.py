"""The monitoring run as people read it (Markdown for the MLflow run and the Prefect artifact, rows for the Prefect
table): aggregates only; recorded values are escaped."""

from __future__ import annotations

from typing import Any

from tasks.core.text import md


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else md(x)


def check_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per check: the Prefect table artifact."""
    return [{"check": c["name"], "result": ("pass" if c["passed"] else "BREACH") if c["judged"] else "reported",
             "value": c["value"], "threshold": c["threshold"], "detail": c["detail"]} for c in result["checks"]]


def report_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Monitoring {md(result['model'])} v{md(result['version'])}: **{md(result['outcome'])}**", "",
             f"- when: {md(result['at'])}; run: {md(result.get('run_id', '(not logged)'))}",
             f"- batch: {result['rows']} texts from {md(result['data'])} ({result['files']} file(s); sha256 "
             f"{md(result['data_digest'][:16])}...; {result['dropped_rows']} rows without text dropped); labels: "
             f"{'yes' if result['labelled'] else 'no'}; groups: {'yes' if result['grouped'] else 'no'}",
             f"- verdict: {md(result['reason'], 600)}"]
    lines += [f"- note: {md(n)}" for n in result["notes"]]
    if result["checks"]:
        lines += ["", "| check | result | value | threshold | detail |", "|---|---|---|---|---|"]
        lines += [f"| {md(r['check'])} | {r['result']} | {_fmt(r['value'])} | {_fmt(r['threshold'])} | "
                  f"{md(r['detail'], 200)} |" for r in check_rows(result)]
    perf = result.get("performance") or {}
    if perf:
        lines += ["", "## Performance (95% bootstrap intervals)", "", "| | reference | batch |", "|---|---|---|"]
        for k in ("accuracy", "macro_f1"):
            ref, cur = perf["reference"][k], perf["batch"][k]
            lines.append(f"| {k} | {_fmt(ref['value'])} {ref['ci']} | {_fmt(cur['value'])} {cur['ci']} |")
        lines += ["", "| class | n | recall (batch) | interval |", "|---|---|---|---|"]
        lines += [f"| {md(c)} | {v['n']} | {_fmt(v['recall'])} | {v['recall_ci']} |"
                  for c, v in perf["batch"]["per_class"].items()]
        if perf.get("groups"):
            lines += ["", "| group | n | accuracy | macro-F1 |", "|---|---|---|---|"]
            lines += [f"| {md(g)} | {v['n']} | " + (f"{_fmt(v['accuracy']['value'])} {v['accuracy']['ci']} | "
                      f"{_fmt(v['macro_f1']['value'])} {v['macro_f1']['ci']} |" if v["judged"] else
                      f"{md(v['note'])} | |") for g, v in perf["groups"].items()]
    drift = result.get("drift") or {}
    if drift:
        lines += ["", "## Drift (reference: the held-out splits the version was approved on)", "",
                  "| measure | effect | reference | batch |", "|---|---|---|---|"]
        lines += [f"| {md(k)} | {_fmt(m['effect'])} | {md(m['reference'])} | {md(m['batch'])} |"
                  for k, m in drift.items()]
        lines.append("\nPlots: `monitoring/drift.html` on this run (Evidently).")
    if result.get("examples"):
        lines += ["", "## Examples (redacted; the policy allows them)", ""]
        lines += [f"- {md(e['text'])} -> {md(e['predicted'])} ({e['confidence']})" for e in result["examples"]]
    return "\n".join(lines) + "\n"
