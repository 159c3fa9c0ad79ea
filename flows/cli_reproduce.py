"""``adaptrail reproduce MODEL/VERSION``: re-train a version from its record in a scratch state and say whether the
adapter comes out byte-identical (``tasks/governance/reproduce.py``; the flow is passed in from here)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.core.errors import EXIT_OK

ParseRef = Callable[[str, "str | None"], tuple[str, str]]


def cmd_reproduce(args: argparse.Namespace, parse_ref: ParseRef) -> int:
    from flows.train_adapter import train_adapter_flow
    from tasks.governance.reproduce import reproduce

    model, version = parse_ref(args.model, None)
    report = reproduce(model, version, lambda config, who: train_adapter_flow(config, requested_by=who),
                       Path(args.out) if args.out else None, args.requested_by)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print_report(report)
    return EXIT_OK


def print_report(report: dict[str, Any]) -> None:
    new, rec, files = report["new"], report["recorded"], report["files"]
    verdict = "byte-identical" if report["identical"] else "NOT byte-identical"
    print(f"\nadaptrail: reproduced {report['model']} v{report['version']} -- {verdict}")
    print(f"  adapter:  digest {new['adapter_digest'][:16]}... (registered {rec['adapter_digest'][:16]}...); "
          f"{len(files['identical'])} files identical, differ: {', '.join(files['differ']) or 'none'}"
          + (f", missing: {', '.join(files['missing'])}" if files["missing"] else "")
          + (f", added: {', '.join(files['added'])}" if files["added"] else ""))
    for k, d in report["metric_differences"].items():
        print(f"  {k}: {new['metrics'][k]:.4f} (registered {rec['metrics'][k]:.4f}, {d:+.4f})")
    diffs = report["environment"]["differences"]
    print(f"  environment: {'as recorded' if not diffs else str(len(diffs)) + ' difference(s) from the recorded one'}")
    for line in diffs[:12]:
        print(f"    {line}")
    print(f"  new run:  {new['run_id']} (flow run {new['flow_run_id']}) in {new['tracking_uri']}")
    print(f"  log:      {new['log']}")
    print(f"  ledger:   `reproduced` event, seq {report['ledger_seq']}")
    print(f"  report:   {Path(report['out']) / 'reproduction.json'}")


def add_reproduce_command(sub, parse_ref: ParseRef) -> None:
    rep = sub.add_parser("reproduce", help="re-train a version from its recorded config, data and base in a scratch "
                         "state and check the new adapter is byte-identical (recorded in the ledger)")
    rep.add_argument("model", metavar="MODEL/VERSION", help="e.g. support-ticket-router/1")
    rep.add_argument("--out", default=None, metavar="DIR", help="where the new run, its logs and adapter are kept "
                     "(a new or empty folder; default $ADAPTRAIL_HOME/reproductions/MODEL-vN-TIME)")
    rep.add_argument("--requested-by", default=None,
                     help="identity recorded as asking for it (default: $ADAPTRAIL_USER or OS user)")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.set_defaults(func=lambda args: cmd_reproduce(args, parse_ref))
