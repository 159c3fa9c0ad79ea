"""``adaptrail monitor MODEL[@alias|/VERSION] --data PATH``: judge a batch of new texts against the evidence the
version was approved on (``tasks/steps/monitor.py``); a breach of an approved version sets ``review_required``."""

from __future__ import annotations

import argparse
import json

from tasks.core.errors import EXIT_GATE_FAILED, EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    from tasks.steps.monitor import run_monitor
    from tasks.steps.monitor_report import check_rows

    result = run_monitor(args.ref, args.data, text_column=args.text_column, label_column=args.label_column,
                         group_column=args.group_column)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        print(f"adaptrail: monitoring {result['model']} v{result['version']} on {result['rows']} texts: "
              f"{result['outcome'].upper()}")
        for row in check_rows(result):
            print(f"  [{row['result']}] {row['check']}: {row['detail']}")
        for note in result["notes"]:
            print(f"  note: {note}")
        print(f"  status: {result['status']} (ledger seq {result['ledger_seq']}); MLflow run {result['run_id']} "
              f"(experiment adaptrail-monitoring: report.md, drift.html)")
        if result["outcome"] == "insufficient_data":
            print(f"  {result['reason']}")
    return EXIT_GATE_FAILED if result["outcome"] == "breach" else EXIT_OK


def add_monitor_command(sub) -> None:
    mon = sub.add_parser("monitor", help="judge new texts against the evidence a version was approved on (drift; "
                         "with labels, accuracy and group checks); a breach sets review_required")
    mon.add_argument("ref", metavar="MODEL[@alias|/VERSION]", help="e.g. support-ticket-router@champion")
    mon.add_argument("--data", required=True, metavar="PATH",
                     help="CSV/JSONL/Parquet file or a glob of them ('landing/*.jsonl')")
    mon.add_argument("--text-column", default=None, help="default: the version's recorded data.text_column")
    mon.add_argument("--label-column", default=None,
                     help="default: the recorded data.label_column; used when the batch has it")
    mon.add_argument("--group-column", default=None,
                     help="default: the recorded data.group_column; used when the batch has it")
    mon.add_argument("--json", action="store_true", help="print the whole result as JSON")
    mon.set_defaults(func=cmd_monitor)
