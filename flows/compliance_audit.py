"""Compliance audit flow: expire overdue approvals and collect evidence -> findings -> point-in-time answer ->
HTML/JSON/CSV reports -> MLflow run (experiment ``adaptrail-audits``) -> Prefect artifacts."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.governance import audit, audit_report
from tasks.governance.audit_run import AuditRequest, answer_point_in_time, collect_and_judge, write_reports

# Reads and judges; the only writes are idempotent (expiry events, report files, one MLflow run): never retried.
step = task(cache_policy=NO_CACHE, retries=0)

#: 06:00 UTC on 1 January and 1 July, for a deployment of this flow.
SEMIANNUAL_CRON = "0 6 1 1,7 *"


@step(name="collect-evidence")
def collect_evidence(req: AuditRequest) -> audit.Audit:
    return collect_and_judge(req)


@step(name="point-in-time")
def point_in_time(found: audit.Audit, req: AuditRequest) -> audit.Audit:
    return answer_point_in_time(found, req)


@step(name="write-reports")
def write(found: audit.Audit, req: AuditRequest) -> tuple[dict[str, Any], dict[str, Path]]:
    return write_reports(found, req)


@step(name="log-to-mlflow")
def log_to_mlflow(data: dict[str, Any], paths: dict[str, Path]) -> str:
    return audit_report.log_to_mlflow(data, paths)


@step(name="publish-artifacts")
def publish(data: dict[str, Any]) -> None:
    create_markdown_artifact(audit_report.summary_markdown(data), key="compliance-audit-summary",
                             description=f"audit verdict: {data['summary']['verdict']}")
    create_table_artifact(audit_report.table_rows(data), key="compliance-audit-versions",
                          description="one row per audited version")


@flow(name="compliance_audit", log_prints=True)
def compliance_audit(since: str | None = None, until: str | None = None, model: str | None = None,
                     out_dir: str | None = None, fail_on: str = "high", as_of: str | None = None,
                     champion_of: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Audit every registered adapter version in scope; the summary's ``exit_code`` is 4 when a finding is at or
    above ``fail_on`` (critical/high/medium/low)."""
    req = AuditRequest(since, until, model, out_dir, fail_on, as_of, champion_of, now)
    found = collect_evidence(req)
    found = point_in_time(found, req)
    data, paths = write(found, req)
    run_id = log_to_mlflow(data, paths)
    publish(data)
    print(f"audit {data['summary']['verdict']}: {data['summary']['counts']}; report {paths['html']}")
    return {**data["summary"], "digest": data["digest"], "mlflow_run_id": run_id,
            "report": {k: str(p) for k, p in paths.items()}}
