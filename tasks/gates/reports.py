"""Readable reports (Markdown) and their JSON twins, written into a run's working directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.core.text import md, md_code
from tasks.gates.decision import GateDecision


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def evaluation_markdown(metrics: dict[str, dict[str, Any]], labels: list[str]) -> str:
    """Headline metrics per split, per-class table and confusion matrix of the test split."""
    lines = ["# Evaluation", "", "| split | accuracy | macro-F1 |", "|---|---|---|"]
    for split, m in metrics.items():
        lines.append(f"| {md(split)} | {_f(m['accuracy'])} | {_f(m['macro_f1'])} |")
    test = metrics["test"]
    lines += ["", "## Test split, per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label in labels:
        pc = test["per_class"][label]
        lines.append(f"| {md(label)} | {_f(pc['precision'])} | {_f(pc['recall'])} | {_f(pc['f1'])} | {pc['support']} |")
    if test.get("per_group"):
        lines += ["", "## Test split, per group", "", "| group | n | accuracy | macro-F1 |", "|---|---|---|---|"]
        for g, m in test["per_group"].items():
            lines.append(f"| {md(g)} | {m['n']} | {_f(m['accuracy'])} | {_f(m['macro_f1'])} |")
    lines += ["", "## Test split, confusion matrix (rows: true, columns: predicted)", "",
              "| true \\ predicted | " + " | ".join(md(x) for x in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for label, row in zip(labels, test["confusion_matrix"]["matrix"]):
        lines.append(f"| {md(label)} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def group_table_markdown(details: dict[str, Any]) -> str:
    """The bias gate's per-group table (n, accuracy, selection rate / TPR / FPR of the judged class)."""
    groups = (details or {}).get("groups") or {}
    rows = groups.get("table") or []
    if not rows:
        return ""
    cls = groups.get("positive_label") or (groups.get("classes_judged") or [None])[0]
    head = f" (class {md_code(cls)})" if cls else ""
    lines = ["", f"### Per group{head}", "", "| group | n | accuracy | selection rate | TPR | FPR | judged |",
             "|---|---|---|---|---|---|---|"]

    def pick(v: Any) -> Any:
        return v.get(cls) if isinstance(v, dict) and cls else v

    for r in rows:
        judged = "yes" if r.get("judged") else f"no ({md(r.get('note') or 'below min size')})"
        lines.append(f"| {md(r['group'])} | {r['n']} | {_f(r.get('accuracy'))} | {_f(pick(r.get('selection_rate')))} | "
                     f"{_f(pick(r.get('tpr')))} | {_f(pick(r.get('fpr')))} | {judged} |")
    return "\n".join(lines) + "\n"


def gate_markdown(decision: GateDecision) -> str:
    """A gate's report: its checks, plus the per-group table for the bias gate."""
    return decision.to_markdown() + group_table_markdown(decision.details if decision.gate == "bias" else {})


def gates_markdown(decisions: list[GateDecision]) -> str:
    return "# Gates\n\n" + "\n".join(gate_markdown(d) for d in decisions)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The story of one run, for the Prefect run page."""
    g = summary["gates"]
    m = summary["metrics"]
    lines = [
        f"# {md(summary['model'])} v{summary['version']}: `{summary['status']}`",
        "",
        "| gate | outcome |", "|---|---|",
        *[f"| {md(k)} | {md(v)} |" for k, v in g.items()],
        "",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {_f(v)} |" for k, v in m.items()],
        "",
        f"- adapter: `{summary['adapter_digest'][:16]}…`, {summary['adapter_bytes']:,} bytes "
        f"({summary['trainable_params']:,} trainable parameters, {summary['trainable_fraction']:.3%} of the model)",
        f"- dataset digest: `{summary['dataset_digest'][:16]}…`",
        f"- base model: {md(summary['base_model'])} ({md(summary['base_model_revision'])})",
        f"- MLflow run: `{summary['run_id']}` in experiment `{summary['experiment']}`",
        f"- model version: `models:/{summary['model']}/{summary['version']}`",
    ]
    return "\n".join(lines) + "\n"
