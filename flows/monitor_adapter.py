"""Monitoring flow: watch the verified adapter -> read the new texts -> measure and judge (drift; with labels,
performance and the group checks) -> MLflow run -> ledger event (a breach: ``review_required``) -> Prefect artifacts.

Served as a deployment on a weekly schedule (``WEEKLY_CRON``) reading ``data``: point it at where production texts
land (a path or a glob; default ``$ADAPTRAIL_MONITOR_DATA`` when the deployment is served)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.steps import monitor
from tasks.steps.monitor_report import check_rows, report_markdown

# Reads, judges and records once: never retried (a retry would record a second result).
step = task(cache_policy=NO_CACHE, retries=0)

#: 05:00 UTC every Monday, for the deployment of this flow.
WEEKLY_CRON = "0 5 * * 1"
ENV_MONITOR_DATA = "ADAPTRAIL_MONITOR_DATA"
DEFAULT_REF = "support-ticket-router@champion"


@step(name="watch-version")
def watch(model: str) -> monitor.Watched:
    return monitor.watch(model)


@step(name="read-batch")
def read_batch(data: str, w: monitor.Watched, text_column: str | None, label_column: str | None,
               group_column: str | None) -> monitor.Batch:
    return monitor.read_batch(data, w, text_column, label_column, group_column)


@step(name="measure-and-log")
def measure_and_log(w: monitor.Watched, b: monitor.Batch) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="adaptrail-monitor-") as tmp:
        result = monitor.measure(w, b, Path(tmp))
        monitor.log_run(w, result, Path(tmp))
    return result


@step(name="record-in-ledger")
def record(w: monitor.Watched, result: dict[str, Any]) -> dict[str, Any]:
    monitor.record(w, result)
    return result


@step(name="publish-artifacts")
def publish(result: dict[str, Any]) -> None:
    create_markdown_artifact(report_markdown(result), key="monitoring-report",
                             description=f"{result['model']} v{result['version']}: {result['outcome']}")
    if result["checks"]:
        create_table_artifact(check_rows(result), key="monitoring-checks", description="one row per check")


@flow(name="monitor_adapter", log_prints=True)
def monitor_adapter(model: str = DEFAULT_REF, data: str = "", text_column: str | None = None,
                    label_column: str | None = None, group_column: str | None = None) -> dict[str, Any]:
    """Judge a batch of new texts (``data``: file or glob; labels and groups used when their columns are there)
    against the evidence ``model`` (MODEL@alias or MODEL/VERSION) was approved on."""
    w = watch(model)
    b = read_batch(data or os.environ.get(ENV_MONITOR_DATA, ""), w, text_column, label_column, group_column)
    result = record(w, measure_and_log(w, b))
    publish(result)
    print(f"monitoring {result['model']} v{result['version']}: {result['outcome']} ({result['reason']}); "
          f"status {result['status']}; MLflow run {result['run_id']}")
    return {k: result[k] for k in ("model", "version", "outcome", "reason", "rows", "run_id", "ledger_seq",
                                   "status")} | {"breaches": result.get("breaches", [])}
