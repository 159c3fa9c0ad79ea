"""``adaptrail list``: every registered version with its status (as the ledger counts it), gates, headline metric
and whether it is champion — one row each, read from the registry and the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.core.names import ALIAS_CHAMPION, GATES, Tag
from tasks.governance import registry, trust
from tasks.governance.ledger import Ledger
from tasks.governance.ledger_view import ledger_tags

HEADLINE = ("test_macro_f1", "test_exact_match")  # classification; causal LM
UNRECORDED = "unrecorded"  # a version the ledger has no (counted) record of


@dataclass
class Row:
    model: str
    version: str
    status: str
    gates: dict[str, str]
    metric: str
    value: float | None
    champion: bool
    review_due: str


def version_rows(model: str | None = None) -> list[Row]:
    """Rows of every version of ``model`` (or of every registered model), oldest first."""
    c = registry.client()
    names = [model] if model else sorted(m.name for m in c.search_registered_models())
    with Ledger() as led:
        t = trust.read(led)
    rows = []
    for name in names:
        champion = registry.version_by_alias(c, name, ALIAS_CHAMPION)
        quoted = name.replace("'", "\\'")
        for mv in sorted(c.search_model_versions(f"name = '{quoted}'"), key=lambda v: int(v.version)):
            view = ledger_tags(t.events(name, str(mv.version)))
            metrics = registry.run_metrics(c, mv.run_id) or {}
            metric = next((m for m in HEADLINE if m in metrics), HEADLINE[0])
            rows.append(Row(name, str(mv.version), view.get(Tag.APPROVAL_STATUS, UNRECORDED),
                            {g: view.get(Tag.gate(g), "?") for g in GATES}, metric, metrics.get(metric),
                            champion is not None and champion.version == mv.version, view.get(Tag.REVIEW_DUE, "")))
    return rows


def rows_text(rows: list[Row]) -> str:
    if not rows:
        return "no registered versions yet; `adaptrail run` trains and registers one"
    head = f"{'model':<24} {'ver':>4}  {'status':<10} {'gates (val/bias/reg)':<22} {'metric':<22} review due"
    lines = [head]
    for r in rows:
        gates = "/".join(r.gates[g] for g in GATES)
        value = "n/a" if r.value is None else f"{r.value:.4f}"
        star = " *" if r.champion else ""
        lines.append(f"{r.model:<24} {r.version:>4}  {r.status:<10} {gates:<22} {r.metric + ' ' + value:<22} "
                     f"{r.review_due if r.status == 'approved' else ''}{star}")
    champions = {r.model for r in rows if r.champion}
    unset = sorted({r.model for r in rows} - champions)
    legend = ["(* champion)"] if champions else []
    legend += [f"(no champion: {', '.join(unset)}; approve a version to make one)"] if unset else []
    return "\n".join(lines + legend)
