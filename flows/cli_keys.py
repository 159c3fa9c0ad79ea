"""``adaptrail keygen | init | policy ... | sign | list | show``: keys, the policy in the ledger, signing a statement,
and looking at registered versions."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
import textwrap
from pathlib import Path

from tasks.core.errors import EXIT_OK, InputError


def cmd_keygen(args: argparse.Namespace) -> int:
    from tasks.core.state import home
    from tasks.governance import keys

    path = Path(args.out) if args.out else home() / "keys" / args.name
    signer = keys.keygen(path, args.comment or f"{args.name}@adaptrail", args.type)
    print(f"adaptrail: key {signer.key_id} for {args.name}: private {path} (keep it; sign with --key {path}), "
          f"public {path}.pub (send it to your policy admin)")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from tasks.governance import policy_admin

    s = policy_admin.init(args.admin, args.key)
    state = f"applied (ledger seq {s.event.seq})" if s.event else "already in force (unchanged)"
    print(f"adaptrail: policy {s.policy_file} {state}; admin key {s.admin_key}; service key {s.service_key}. "
          "Add an approver: `adaptrail keygen NAME` then `adaptrail policy add NAME --role approver --pubkey "
          f"KEY.pub --key {s.admin_key}`")
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    from tasks.governance import policy_admin, trust
    from tasks.governance.policy import Policy

    if args.policy_command == "show":
        policy = policy_admin.current()
        if policy is None:
            raise InputError("the ledger holds no policy yet; run `adaptrail init`")
        print(f"# policy {policy.digest} (pinned in the ledger)\n{policy.to_yaml()}", end="")
        return EXIT_OK
    signer = trust.user_signer(args.key)
    if args.policy_command == "apply":
        event = policy_admin.apply(Policy.load(args.file), signer, args.reason)
    elif args.policy_command == "add":
        public = Path(args.pubkey).read_text(encoding="utf-8") if Path(args.pubkey).is_file() else args.pubkey
        event = policy_admin.add_person(args.name, args.role, public, signer, args.reason)
    else:
        event = policy_admin.revoke_key(args.name, args.fingerprint, signer, reason=args.reason)
    print("adaptrail: policy unchanged (already in force)" if event is None else
          f"adaptrail: policy {event.extra['policy_digest'][:16]}... in force (ledger seq {event.seq}, signed by "
          f"{event.actor})")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from tasks.governance import trust

    text = args.statement if args.statement != "-" else sys.stdin.read()
    try:
        statement = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("STATEMENT is the base64 line the review form shows; paste it whole") from None
    signer = trust.user_signer(args.key)
    print(f"signing as key {signer.key_id}:\n{textwrap.indent(statement.decode('ascii', 'replace'), '  ')}",
          file=sys.stderr)
    print(signer.sign(statement))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from tasks.governance.listing import rows_text, version_rows

    print(rows_text(version_rows(args.model)))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from tasks.governance.evidence import evidence_markdown
    from tasks.governance.loader import resolve_ref

    model, version = resolve_ref(args.ref)
    print(evidence_markdown(model, version))
    return EXIT_OK


def cmd_signing_key(args: argparse.Namespace) -> int:
    from tasks.governance import attestation
    from tasks.governance.loader import resolve_ref
    from tasks.governance.signed_adapter import export

    model, version = resolve_ref(args.ref)
    pem, exported = export(model, version, Path(args.out) if args.out else None)
    if exported is None:
        print(pem, end="")
        print(f"adaptrail: the public key (PEM) of the service key that signed {model} v{version}'s model-signing "
              f"bundle; check it without adaptrail: model_signing verify key --signature {attestation.BUNDLE_FILE} "
              "--public_key THIS.pem ADAPTER_DIR (or pass --out DIR to fetch the bundle and the files too)",
              file=sys.stderr)
        return EXIT_OK
    print(f"adaptrail: {model} v{version}: key {exported.key_id} -> {exported.public_key}, bundle -> "
          f"{exported.bundle}, adapter files -> {exported.adapter}. Check them with the library's own verifier:\n"
          f"  {exported.command}")
    return EXIT_OK


def add_inspect_commands(sub) -> None:
    ls = sub.add_parser("list", help="registered versions: status, gates, headline metric, champion")
    ls.add_argument("model", nargs="?", default=None, help="only this registered model")
    ls.set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="a version's evidence (what the review form shows): MODEL/VERSION or MODEL@alias")
    sh.add_argument("ref", help="e.g. support-ticket-router/1 or support-ticket-router@champion")
    sh.set_defaults(func=cmd_show)
    sk = sub.add_parser("signing-key", help="the PEM public key that signed a version's OpenSSF model-signing "
                        "bundle (from the ledger); --out DIR also exports the bundle and the adapter files")
    sk.add_argument("ref", help="e.g. support-ticket-router/1 or support-ticket-router@champion")
    sk.add_argument("--out", default=None, help="write pipeline.pem, adapter.sig and files/ here, and print the "
                    "`model_signing verify key` command that checks them")
    sk.set_defaults(func=cmd_signing_key)


def add_key_commands(sub) -> None:
    kg = sub.add_parser("keygen", help="create a key pair (OpenSSH format; ed25519, or ecdsa P-256 for a service key)")
    kg.add_argument("name", help="whose key, e.g. alice (the name the policy will give them)")
    kg.add_argument("--out", default=None, help="private key path (default $ADAPTRAIL_HOME/keys/NAME; .pub beside)")
    kg.add_argument("--comment", default=None)
    kg.add_argument("--type", default="ed25519", choices=("ed25519", "ecdsa"), help="ed25519 (people) or ecdsa: "
                    "P-256, what the pipeline's service key must be (it also signs the model-signing bundle)")
    kg.set_defaults(func=cmd_keygen)

    ini = sub.add_parser("init", help="one laptop: service key, admin key and policy, applied to the ledger")
    ini.add_argument("--admin", default=None, help="the admin's name (default: OS user)")
    ini.add_argument("--key", default=None, help="the admin's existing private key (default: create one)")
    ini.set_defaults(func=cmd_init)

    pol = sub.add_parser("policy", help="show or change the policy pinned in the ledger (signed by an admin)")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("show", help="print the policy in force as YAML")
    ap = psub.add_parser("apply", help="pin a policy file in the ledger")
    ap.add_argument("file")
    add = psub.add_parser("add", help="give a person a role and a key")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("approver", "admin", "service"))
    add.add_argument("--pubkey", required=True, help="their .pub file or `ssh-ed25519 AAAA...` (or "
                     "`ecdsa-sha2-nistp256 AAAA...`) line")
    rk = psub.add_parser("revoke-key", help="revoke one of a person's keys from now on (rotation, compromise)")
    rk.add_argument("name")
    rk.add_argument("fingerprint", help="SHA256:... as `ssh-keygen -lf KEY.pub` prints it")
    for cmd in (ap, add, rk):
        cmd.add_argument("--key", default=None, help="an admin's private key (default $ADAPTRAIL_SIGNING_KEY)")
        cmd.add_argument("--reason", default="", help="why; recorded in the ledger")
    pol.set_defaults(func=cmd_policy)

    sg = sub.add_parser("sign", help="sign a statement shown by the review form; prints the signature to paste",
                        description="Or with ssh-agent / a passphrase: echo STATEMENT | base64 -d | "
                        "ssh-keygen -Y sign -n adaptrail -f ~/.ssh/id_ed25519")
    sg.add_argument("statement", help="the base64 statement (or - to read it from stdin)")
    sg.add_argument("--key", default=None, help="your private key (default $ADAPTRAIL_SIGNING_KEY)")
    sg.set_defaults(func=cmd_sign)
