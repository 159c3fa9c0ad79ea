"""The compliance audit as stages: one request, checked once; collect and judge -> point-in-time answer -> reports
-> MLflow. The CLI runs :func:`run_audit`; the ``compliance_audit`` flow runs the same stages as Prefect tasks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from time import perf_counter
from typing import Any

from tasks.core import state
from tasks.core.errors import InputError
from tasks.governance import audit, audit_answers, audit_report, registry
from tasks.governance.card import CARD_DIR, CARD_HTML


@dataclass(frozen=True)
class AuditRequest:
    """What to audit and how to judge it; a bad severity or half a point-in-time question fails before any work."""

    since: str | None = None
    until: str | None = None
    model: str | None = None
    out_dir: str | Path | None = None
    fail_on: str = "high"
    as_of: str | None = None
    champion_of: str | None = None
    now: datetime | None = None

    def __post_init__(self) -> None:
        audit.verdict([], self.fail_on)
        if (self.as_of is None) != (self.champion_of is None):
            raise InputError("the point-in-time question needs both as_of and champion_of (--as-of DATE and "
                             "--champion-of MODEL)")


def collect_and_judge(req: AuditRequest, timings: dict[str, float] | None = None) -> audit.Audit:
    """Expire overdue approvals, gather every in-scope version's evidence, and judge it (findings); ``timings``:
    see :func:`audit.collect`."""
    found = audit.collect(audit.parse_when(req.since), audit.parse_when(req.until, end_of_day=True), req.model,
                          req.now, timings=timings)
    audit.assess(found, req.now)
    return found


def answer_point_in_time(found: audit.Audit, req: AuditRequest) -> audit.Audit:
    """Which version was champion of ``champion_of`` at ``as_of``, and who approved it (when asked)."""
    if req.champion_of:
        found.point_in_time = audit.champion_at(req.champion_of, audit.parse_when(req.as_of, end_of_day=True))
        found.point_in_time["asked"] = str(req.as_of)
    return found


def write_reports(found: audit.Audit, req: AuditRequest) -> tuple[dict[str, Any], dict[str, Path]]:
    """The self-digested report data and its HTML/JSON/CSV files."""
    out = Path(req.out_dir) if req.out_dir else default_out_dir(found.generated_at)
    c = registry.client()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the report folder {out} ({err}); pass --out DIR you can write") from None
    # the adapter cards beside the report (their digests go into it), so an auditor reads it without MLflow
    audit_answers.copy_cards(found.versions, out, lambda rec, tmp: c.download_artifacts(
        rec.run_id, f"{CARD_DIR}/{CARD_HTML}", tmp))
    data = audit_report.report_data(found, req.fail_on)
    return data, audit_report.write_reports(data, out)


def default_out_dir(generated_at: str) -> Path:
    return state.home() / "audits" / generated_at.replace(":", "").replace(".", "-")


def run_audit(since: str | None = None, until: str | None = None, model: str | None = None,
              out_dir: str | Path | None = None, fail_on: str = "high", as_of: str | None = None,
              champion_of: str | None = None, now: datetime | None = None, log: bool = True,
              timings: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, Path], str | None]:
    """The whole audit without Prefect (the CLI): every stage in order; returns data, report paths, MLflow run id.
    ``timings``, when given, gets each stage's seconds: ``collect_s`` (expiry, registry and ledger checks and the
    adapter bytes, judged), of it ``rehash_s`` (the adapter bytes alone), ``reports_s`` and ``mlflow_s``."""
    req = AuditRequest(since, until, model, out_dir, fail_on, as_of, champion_of, now)
    clock = timings if timings is not None else {}
    started = perf_counter()
    found = answer_point_in_time(collect_and_judge(req, clock), req)
    clock["collect_s"], started = perf_counter() - started, perf_counter()
    data, paths = write_reports(found, req)
    clock["reports_s"], started = perf_counter() - started, perf_counter()
    run_id = audit_report.log_to_mlflow(data, paths) if log else None
    clock["mlflow_s"] = perf_counter() - started
    return data, paths, run_id
