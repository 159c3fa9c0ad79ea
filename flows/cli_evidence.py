"""``adaptrail card`` and ``adaptrail technical-file``: the evidence documents of one version, from what the
pipeline recorded (``tasks/governance/card.py``, ``tasks/governance/technical_file.py``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tasks.core.errors import EXIT_OK


def _ref(args: argparse.Namespace) -> tuple[str, str]:
    return args.parse_ref(args.model, None)  # the CLI's MODEL/VERSION parser (flows/cli.py)


def cmd_card(args: argparse.Namespace) -> int:
    from tasks.governance import card

    model, version = _ref(args)
    built = card.publish(model, version)
    print(f"adaptrail: the adapter card of {model} v{version} is logged on run {built.run_id} "
          f"({built.links['card']}) and is the version's description in MLflow")
    if built.missing:
        print(f"  missing (the requester's card: section): {', '.join(built.missing)}")
    if args.out:
        paths = card.write(built, Path(args.out))
        print("  written: " + ", ".join(str(p) for p in paths.values()))
    return EXIT_OK


def cmd_technical_file(args: argparse.Namespace) -> int:
    from tasks.governance import technical_file

    model, version = _ref(args)
    made = technical_file.build(model, version, Path(args.out))
    print(f"adaptrail: technical file of {model} v{version}: {made.folder} (zip {made.zip_path})")
    print(f"  {made.evidence_files} evidence files; {len(made.needs_input)} items need a person's input:")
    for item in made.needs_input:
        print(f"    - {item}")
    return EXIT_OK


def add_evidence_commands(sub, parse_ref: Callable[[str, str | None], tuple[str, str]]) -> None:
    card = sub.add_parser("card", help="(re)build a version's adapter card, log it on the version and set its MLflow "
                          "description")
    card.add_argument("model", metavar="MODEL/VERSION", help="e.g. support-ticket-router/1")
    card.add_argument("--out", default=None, metavar="DIR", help="also write card.md, card.html, card.json here")
    card.set_defaults(func=cmd_card, parse_ref=parse_ref)
    tf = sub.add_parser("technical-file", help="write a version's technical file (EU AI Act Annex IV index over "
                        "its evidence) as a folder and a zip")
    tf.add_argument("model", metavar="MODEL/VERSION", help="e.g. support-ticket-router/1")
    tf.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder; DIR.zip is written beside it")
    tf.set_defaults(func=cmd_technical_file, parse_ref=parse_ref)
