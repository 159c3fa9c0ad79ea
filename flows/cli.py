"""``adaptrail`` command line: thin argument parsing over the flows; exit codes from DESIGN.md."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from flows.cli_config import add_config_commands, preflight, signed_request
from flows.cli_logging import configure_logging, quiet_expected_errors
from flows.cli_reproduce import add_reproduce_command
from flows.cli_monitor import add_monitor_command
from flows.cli_process import exit_without_final_gc, temporary_api_starting
from flows.cli_keys import add_inspect_commands, add_key_commands
from flows.cli_evidence import add_evidence_commands
from tasks.core import relocation, state
from tasks.core.names import SEVERITIES
from tasks.core.errors import EXIT_ERROR, EXIT_GATE_FAILED, EXIT_OK, EXIT_REFUSED, AdaptrailError, InputError

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def _print_run_summary(s: dict[str, Any]) -> None:
    gates = " ".join(f"{k}={v}" for k, v in s["gates"].items())
    print(f"\nadaptrail: registered {s['model']} version {s['version']} -- status {s['status']}")
    print(f"  gates:    {gates}")
    for gate, reason in s["gate_reasons"].items():
        if s["gates"][gate] == "failed":
            print(f"  {gate} gate failed: {reason}")
    test = " ".join(f"{k.removeprefix('test_')}={v:.4f}" for k, v in s["metrics"].items() if k.startswith("test_"))
    print(f"  test:     {test}")
    print(f"  adapter:  {s['adapter_bytes']:,} bytes, {s['trainable_params']:,} trainable params "
          f"({s['trainable_fraction']:.3%}), digest {s['adapter_digest'][:16]}...")
    print(f"  lineage:  dataset {s['dataset_digest'][:16]}..., base {s['base_model']} ({s['base_model_revision']})")
    print(f"  MLflow:   run {s['run_id']} in experiment '{s['experiment']}' ({s['tracking_uri']})")
    print("  look:     make ui   (or: mlflow ui --backend-store-uri " + s["tracking_uri"] + ")")
    ref = f"{s['model']}/{s['version']}"
    if s["status"] == "pending":
        print(f"  next:     adaptrail show {ref}, then an approver who did not request the run signs: adaptrail "
              f"approve {ref} --key THEIR_KEY --reason ...")
    else:
        print(f"  next:     adaptrail show {ref} (why it was rejected); an override needs two approvers' keys")


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.core.config_files import load_config

    config = load_config(args.config, args.set)
    preflight(config)  # before the flow (and Prefect, torch) is even imported
    if args.dry_run:
        from flows.cli_config import dry_run

        return dry_run(config)
    with temporary_api_starting():  # the temporary Prefect server starts while the flow's modules import
        from flows.train_adapter import train_adapter_flow

    summary = train_adapter_flow(config, requested_by=args.requested_by, request=signed_request(args, config))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_run_summary(summary)
    return EXIT_GATE_FAILED if "failed" in summary["gates"].values() else EXIT_OK


def _add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.epochs=1 (repeatable)")
    parser.add_argument("--requested-by", default=None,
                        help="identity recorded as requester, unsigned (default: $ADAPTRAIL_USER or OS user)")
    parser.add_argument("--key", default=None, metavar="PRIVATE_KEY",
                        help="sign the run request with your key, so the policy knows who asked (default "
                        "$ADAPTRAIL_SIGNING_KEY when set; required when the policy says require_signed_requests)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def cmd_compare(args: argparse.Namespace) -> int:
    from tasks.core.config_files import load_config

    overrides = list(args.set) + ([f"compare.methods=[{args.methods}]"] if args.methods else []) + (
        ["compare.register_winner=false"] if args.no_register else [])
    config = load_config(args.config, overrides)
    preflight(config)
    with temporary_api_starting():
        from flows.compare_methods import compare_methods_flow
    out = compare_methods_flow(config, requested_by=args.requested_by, request=signed_request(args, config))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(out["markdown"])
        print(f"MLflow: parent run {out['parent_run_id']} (one child run per method) in experiment "
              f"'{config.registry.experiment}' ({state.tracking_uri()})")
        if "registered" in out:
            _print_run_summary(out["registered"])
    registered = out.get("registered")
    if out["recommended"] is None:
        print("adaptrail: no method's candidate passed the gates; nothing registered (see the gates column)",
              file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_GATE_FAILED if registered and "failed" in registered["gates"].values() else EXIT_OK


def cmd_example_data(args: argparse.Namespace) -> int:
    from tasks.data.example import write_support_tickets

    path = write_support_tickets(Path(args.out), n_rows=args.rows, seed=args.seed)
    print(f"wrote {path}")
    return EXIT_OK


# --- Prefect UI: serve the deployments, start local servers (flows/serve.py) --------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from flows.serve import serve_all

    if not os.environ.get("PREFECT_API_URL") and not args.temporary_api:
        raise InputError("PREFECT_API_URL is not set: the deployments would be served on a temporary API that no UI "
                         "can reach. Start one (`adaptrail ui` prints the URL) and export PREFECT_API_URL, or pass "
                         "--temporary-api if that is what you want")
    serve_all(limit=args.limit)
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    from flows.serve import run_ui

    run_ui(args.prefect_port, args.mlflow_port)
    return EXIT_OK


def _add_ui_commands(sub) -> None:
    srv = sub.add_parser("serve", help="serve train_adapter, compare_methods, review_adapter, compliance_audit and "
                         "approval_reminders as deployments (runs triggered from the Prefect UI/API execute here; "
                         "Ctrl-C stops)")
    srv.add_argument("--limit", type=int, default=None, metavar="N", help="at most N flow runs at once")
    srv.add_argument("--temporary-api", action="store_true", help="serve on a temporary API when PREFECT_API_URL "
                     "is unset (nothing outside this process can reach it)")
    srv.set_defaults(func=cmd_serve)
    ui = sub.add_parser("ui", help="start a local Prefect server and MLflow server over the project's state")
    ui.add_argument("--prefect-port", type=int, default=4200, metavar="PORT", help="default: 4200")
    ui.add_argument("--mlflow-port", type=int, default=5000, metavar="PORT", help="default: 5000")
    ui.set_defaults(func=cmd_ui)

# --- approvals and verified loading (tasks/approvals.py, tasks/loader.py) --------------------------------


def _model_version(ref: str, version: str | None) -> tuple[str, str]:
    """``MODEL/VERSION`` (the one reference syntax), or the older ``MODEL VERSION`` (still accepted)."""
    if version is not None:
        return ref, version
    model, sep, number = ref.rpartition("/")
    if not sep or not model or not number.isdigit():
        raise InputError(f"name the version as MODEL/VERSION, e.g. support-ticket-router/1 (got {ref!r})")
    return model, number


def cmd_decide(args: argparse.Namespace) -> int:
    from tasks.governance import approvals, trust

    model, version = _model_version(args.model, args.version)
    decision = approvals.decide(args.command, model, version, trust.user_signer(args.key), args.reason,
                                override=getattr(args, "override", False))
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
        return EXIT_OK
    for fixed in decision.repaired:
        print(f"adaptrail: repaired from the ledger: {fixed}")
    seq = f" (ledger seq {decision.seq})" if decision.seq else ""
    print(f"adaptrail: {decision.model} v{decision.version}: {decision.message}{seq}")
    return EXIT_OK


def _ref(model: str, version: str | None) -> str:
    if version is None:
        return model
    return f"{model}{version}" if version.startswith("@") else f"{model}/{version}"


def cmd_verify(args: argparse.Namespace) -> int:
    from tasks.governance.loader import verify

    report = verify(_ref(args.model, args.version))
    if args.json:
        print(json.dumps({"model": report.model, "version": report.version, "ok": report.ok,
                          "checks": [vars(c) for c in report.checks]}, indent=2))
    else:
        print(report.to_text())
    return EXIT_OK if report.ok else EXIT_REFUSED


def cmd_predict(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from tasks.governance.loader import predict

    texts = [t for t in args.texts if t != "-"]
    file = args.file or ("-" if "-" in args.texts else None)  # `predict MODEL -` reads stdin, as `--file -` does
    if file:
        source = sys.stdin if file == "-" else Path(file).open(encoding="utf-8")
        with source:
            texts += [line.rstrip("\n") for line in source if line.strip()]
    if not texts:
        raise InputError("give texts to classify: as arguments, or one per line with --file FILE (or --file - for "
                         "stdin)")
    hf_logging.set_verbosity_error()  # not "You should probably TRAIN this model" on every call: it is trained
    results = predict(args.ref, texts)
    if args.json:
        print(json.dumps([{"text": t, **r} for t, r in zip(texts, results)], indent=2))
    else:
        for text, r in zip(texts, results):
            print(f"{r['label']}\t{r['proba']:.3f}\t{text}")
    return EXIT_OK


def _add_approval_commands(sub) -> None:
    for name, what in (("approve", "approve a version and make it champion"),
                       ("reject", "reject a pending version"),
                       ("revoke", "withdraw an approval (removes alias champion; names a successor)"),
                       ("review", "re-review an approved, expired or review_required version (renews review.due)")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("model", metavar="MODEL/VERSION", help="e.g. support-ticket-router/1")
        cmd.add_argument("version", nargs="?", default=None, help=argparse.SUPPRESS)  # the older `MODEL VERSION`
        cmd.add_argument("--reason", required=True, help="why; recorded in the approval ledger")
        cmd.add_argument("--key", default=None, metavar="PRIVATE_KEY",
                         help="your key, which names you (default $ADAPTRAIL_SIGNING_KEY); the policy says who may")
        if name in ("approve", "review"):
            cmd.add_argument("--override", action="store_true", help="approve although a gate failed: recorded "
                             "first, then confirmed by a second approver running the same command with their key")
        cmd.add_argument("--json", action="store_true", help="print the decision as JSON")
        cmd.set_defaults(func=cmd_decide)

    ver = sub.add_parser("verify", help="check an adapter's digests, approval, ledger and signature")
    ver.add_argument("model", help="model name, or a full reference such as support-ticket-router@champion")
    ver.add_argument("version", nargs="?", default=None, help="VERSION or @alias")
    ver.add_argument("--json", action="store_true", help="print the checks as JSON")
    ver.set_defaults(func=cmd_verify)

    pred = sub.add_parser("predict", help="classify texts with a verified adapter, e.g. MODEL@champion")
    pred.add_argument("ref", help="MODEL@alias, MODEL/VERSION or models:/MODEL@champion")
    pred.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify; - reads one per line from stdin")
    pred.add_argument("--file", default=None, metavar="FILE", help="also classify each non-empty line of FILE (- for stdin)")
    pred.add_argument("--json", action="store_true", help="print label, proba and scores per text as JSON")
    pred.set_defaults(func=cmd_predict)


# --- compliance audit (tasks/audit.py, tasks/audit_report.py) ------------------------------------------


def cmd_audit(args: argparse.Namespace) -> int:
    from tasks.governance.audit_report import point_in_time_text
    from tasks.governance.audit_run import run_audit

    data, paths, run_id = run_audit(args.since, args.until, args.model, args.out, args.fail_on, args.as_of,
                                    args.champion_of)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return data["summary"]["exit_code"]
    s = data["summary"]
    counts = " ".join(f"{k}={n}" for k, n in s["counts"].items())
    print(f"adaptrail: audit {s['verdict'].upper()} -- {s['versions']} versions of {s['models']} models; {counts}")
    print(f"  ledger:   {s['ledger_length']} events, chain {'verifies' if s['chain_ok'] else 'BROKEN'}, "
          f"head {s['ledger_head_hash']}")
    print(f"  signed:   {s['policy']}")
    if s["expired_by_audit"]:
        print(f"  expired:  {', '.join(s['expired_by_audit'])} (recorded in the ledger)")
    for f in data["findings"]:
        where = f" {f['model']} v{f['version']}" if f["model"] else ""
        print(f"  [{f['severity']}]{where}: {f['message']}")
    if data.get("point_in_time"):
        print("  " + point_in_time_text(data["point_in_time"]))
    print(f"  report:   {paths['html']} (digest {data['digest']}); MLflow run {run_id}")
    return s["exit_code"]


def _add_audit_command(sub) -> None:
    aud = sub.add_parser("audit", help="compliance audit of every registered version: findings, HTML/JSON/CSV report")
    aud.add_argument("--since", default=None, metavar="DATE", help="versions created or decided on/after DATE")
    aud.add_argument("--until", default=None, metavar="DATE", help="... and up to DATE (a bare date is inclusive)")
    aud.add_argument("--model", default=None, metavar="NAME", help="only this registered model")
    aud.add_argument("--out", default=None, metavar="DIR", help="report folder (default $ADAPTRAIL_HOME/audits/TIME)")
    aud.add_argument("--fail-on", default="high", choices=SEVERITIES,
                     help="exit 4 when a finding is this severe or worse (default: high)")
    aud.add_argument("--as-of", default=None, metavar="DATE", help="point in time for --champion-of")
    aud.add_argument("--champion-of", default=None, metavar="MODEL",
                     help="answer: which version was champion of MODEL at --as-of, and who approved it")
    aud.add_argument("--json", action="store_true", help="print the report as JSON")
    aud.set_defaults(func=cmd_audit)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("adaptrail")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adaptrail", description="Governed PEFT adapters: train, gate, register, audit.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"adaptrail {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = _add_config_args(sub.add_parser("run", help="run the train_adapter flow on a config"))
    run.add_argument("--dry-run", action="store_true", help="load, split and validate the data and print the "
                     "effective config; train and register nothing")
    run.set_defaults(func=cmd_run)
    cmp = _add_config_args(sub.add_parser(
        "compare", help="train several PEFT methods on the same split and budget, compare them side by side, "
        "and register the recommended one through the gates"))
    cmp.add_argument("--methods", default=None, metavar="M1,M2,...",
                     help="e.g. lora,ia3,prompt_tuning,bottleneck,full (default: compare.methods in the config)")
    cmp.add_argument("--no-register", action="store_true", help="only compare; register nothing")
    cmp.set_defaults(func=cmd_compare)

    rel = sub.add_parser("relocate", help="after moving or copying the state directory: point the artifact paths "
                         "MLflow recorded at this one")
    rel.set_defaults(func=cmd_relocate)
    ex = sub.add_parser("example-data", help="(re)generate the example support-ticket data set")
    ex.add_argument("--out", default="examples/support_tickets.csv")
    ex.add_argument("--rows", type=int, default=3000)
    ex.add_argument("--seed", type=int, default=7)
    ex.set_defaults(func=cmd_example_data)

    _add_approval_commands(sub)
    add_key_commands(sub)
    add_inspect_commands(sub)
    add_config_commands(sub, str(DEFAULT_CONFIG))
    _add_audit_command(sub)
    add_reproduce_command(sub, _model_version)
    add_monitor_command(sub)
    add_evidence_commands(sub, _model_version)
    _add_ui_commands(sub)
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    for cmd in sub.choices.values():  # also after the subcommand: `adaptrail run -v`
        cmd.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, "
                         "and tracebacks for expected errors")
        cmd.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="warnings and errors only")
    return p


_READS_STATE = ("verify", "predict", "list", "show", "approve", "reject", "revoke", "review", "audit", "reproduce",
                "card", "technical-file", "signing-key", "monitor")


def _require_state(command: str) -> None:
    """A command that reads registered versions refuses a state directory that does not exist, instead of creating
    an empty one and then saying there is nothing there."""
    if command in _READS_STATE and not os.environ.get("MLFLOW_TRACKING_URI") and \
            not (state.home() / "mlflow.db").is_file():
        raise InputError(f"no adaptrail state at {state.home()} (no mlflow.db there); run this where `make run` ran, "
                         "or set ADAPTRAIL_HOME (or MLFLOW_TRACKING_URI) to your state")
    if command in _READS_STATE + ("run", "compare", "ui"):
        relocation.require_in_place()


def cmd_relocate(args: argparse.Namespace) -> int:
    old = relocation.moved_from()
    changed = relocation.relocate()
    print(f"relocated {sum(changed.values())} recorded paths from {old} to {relocation.here()}: "
          + ", ".join(f"{k} {v}" for k, v in changed.items()))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet and not args.verbose and "prefect" not in sys.modules:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    configure_logging(args.verbose)
    if not args.verbose and args.command in ("run", "compare", "audit"):
        quiet_expected_errors()
    logging.getLogger("adaptrail").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        _require_state(args.command)
        code = args.func(args)
    except AdaptrailError as err:
        if args.verbose:  # the traceback of an expected error too, for a bug report
            traceback.print_exc()
        print(f"adaptrail: error: {err}", file=sys.stderr)
        code = err.exit_code
    except KeyboardInterrupt:
        code = EXIT_ERROR
    return code


def entrypoint() -> None:
    exit_without_final_gc(main())


if __name__ == "__main__":
    entrypoint()
