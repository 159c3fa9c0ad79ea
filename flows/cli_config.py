"""``adaptrail config show|schema`` and ``adaptrail run --dry-run``: what a run would use, before it trains."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from tasks.core.errors import EXIT_OK, InputError, ValidationFailed


def cmd_config(args: argparse.Namespace) -> int:
    from tasks.core.config import Config
    from tasks.core.config_files import load_config

    if args.config_command == "schema":
        print(json.dumps(Config.model_json_schema(), indent=2))
    else:
        print(load_config(args.config, args.set).to_yaml(), end="")
    return EXIT_OK


def dry_run(config) -> int:
    """Load and split the data, run the validation gate, print the effective config; train and register nothing."""
    from flows.train_adapter import steps_for
    from validation.suite import run_validation

    splits = steps_for(config.model.task).load_data.fn(config)
    print(f"# effective config\n{config.to_yaml()}", end="")
    summary = splits.summary()
    print(f"# data: {summary['source']} digest {summary['digest'][:16]}..., rows {summary['rows']}")
    with tempfile.TemporaryDirectory(prefix="adaptrail-dry-run-") as tmp:
        outcome = run_validation(splits, config.gates.validation, Path(tmp), task=config.model.task)
        if outcome.decision.failed:
            raise ValidationFailed(outcome.failures, "(dry run: the report is not kept)")
    print(f"# validation gate: {outcome.decision.outcome} ({outcome.decision.reason}); dry run: nothing trained or "
          "registered")
    return EXIT_OK


def preflight(config) -> None:
    """Cheap checks before any server starts: the data is there and has the columns the config names (read from
    its header only)."""
    from tasks.data.splits import check_columns, header_columns

    path = Path(config.data.path).expanduser()
    if not path.exists():
        raise InputError(f"data file not found: {path} (set data.path to an existing CSV/JSONL/Parquet file or a "
                         "datasets.save_to_disk directory)")
    columns = header_columns(path, config.data.format)
    if columns is None:
        return
    data = config.data
    if config.model.task == "causal_lm":
        data = data.model_copy(update={"text_column": data.prompt_column, "label_column": data.response_column})
    check_columns(data, columns)


def signed_request(args: argparse.Namespace, config) -> dict[str, str] | None:
    """The run request signed with ``--key`` (or ADAPTRAIL_SIGNING_KEY); None when no key is given."""
    from tasks.core.canonical import json_sha256
    from tasks.governance import run_requests, trust

    if not (args.key or os.environ.get(trust.ENV_SIGNING_KEY)):
        return None
    if args.requested_by:
        raise InputError("--requested-by names an unsigned requester; with --key the key names you")
    return run_requests.sign_request(trust.user_signer(args.key), json_sha256(config.model_dump(mode="json")))


def add_config_commands(sub, default_config: str) -> None:
    cfg = sub.add_parser("config", help="print the effective config (show) or its JSON schema with descriptions")
    csub = cfg.add_subparsers(dest="config_command", required=True)
    show = csub.add_parser("show", help="the config a run would use: defaults, the YAML and --set overrides")
    show.add_argument("--config", default=default_config, help="YAML config (default: configs/default.yaml)")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    csub.add_parser("schema", help="every key, its type, bounds and description (JSON schema)")
    cfg.set_defaults(func=cmd_config)
