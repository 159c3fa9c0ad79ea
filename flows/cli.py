"""``adaptrail`` command line: thin argument parsing over the flows; exit codes from DESIGN.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (environment defaults first)
from tasks import state
from tasks.errors import EXIT_ERROR, EXIT_GATE_FAILED, EXIT_OK, AdaptrailError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def _print_run_summary(s: dict[str, Any]) -> None:
    gates = " ".join(f"{k}={v}" for k, v in s["gates"].items())
    print(f"\nadaptrail: registered {s['model']} version {s['version']} -- status {s['status']}")
    print(f"  gates:    {gates}")
    for gate, reason in s["gate_reasons"].items():
        if s["gates"][gate] == "failed":
            print(f"  {gate} gate failed: {reason}")
    print(f"  test:     accuracy={s['metrics']['test_accuracy']:.4f} macro_f1={s['metrics']['test_macro_f1']:.4f}")
    print(f"  adapter:  {s['adapter_bytes']:,} bytes, {s['trainable_params']:,} trainable params "
          f"({s['trainable_fraction']:.3%}), digest {s['adapter_digest'][:16]}...")
    print(f"  lineage:  dataset {s['dataset_digest'][:16]}..., base {s['base_model']} ({s['base_model_revision']})")
    print(f"  MLflow:   run {s['run_id']} in experiment '{s['experiment']}' ({s['tracking_uri']})")
    print("  look:     make ui   (or: mlflow ui --backend-store-uri " + s["tracking_uri"] + ")")


def cmd_run(args: argparse.Namespace) -> int:
    from flows.train_adapter import train_adapter_flow
    from tasks.config import load_config

    config = load_config(args.config, args.set)
    summary = train_adapter_flow(config, requested_by=args.requested_by)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_run_summary(summary)
    return EXIT_GATE_FAILED if "failed" in summary["gates"].values() else EXIT_OK


def cmd_example_data(args: argparse.Namespace) -> int:
    from tasks.example_data import write_support_tickets

    path = write_support_tickets(Path(args.out), n_rows=args.rows, seed=args.seed)
    print(f"wrote {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptrail", description="Governed PEFT adapters: train, gate, register, audit.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the train_adapter flow on a config")
    run.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/default.yaml)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set training.epochs=1 (repeatable)")
    run.add_argument("--requested-by", default=None, help="identity recorded as requester (default: $ADAPTRAIL_USER or OS user)")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    run.set_defaults(func=cmd_run)

    ex = sub.add_parser("example-data", help="(re)generate the example support-ticket data set")
    ex.add_argument("--out", default="examples/support_tickets.csv")
    ex.add_argument("--rows", type=int, default=3000)
    ex.add_argument("--seed", type=int, default=7)
    ex.set_defaults(func=cmd_example_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("adaptrail").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        code = args.func(args)
    except AdaptrailError as err:
        print(f"adaptrail: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        code = EXIT_ERROR
    return code


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
