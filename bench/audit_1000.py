"""Benchmark: the compliance audit over many registered versions (target: registry and ledger checks under 60 s).

Seeds a temporary state dir (MLflow versions with every tag, runs with metrics, small real adapter folders with
manifests, and ledger events signed the way the pipeline and an approver sign them, under a policy), then times
the audit in stages: (a) the registry and ledger checks (expiry, ledger chain and signatures, MLflow versions, runs
and tags, findings), (b) the byte re-hash of every adapter (digest and model-signing check), (c) the reports (cards,
JSON/CSV/HTML, the MLflow run); and ``adaptrail verify`` of one version, warm (target: under 2 s).

``--backend local``: SQLite MLflow store and ledger in the state dir. ``--backend servers``: a throw-away PostgreSQL
for the ledger and a real ``mlflow server`` (SQLite backend in the state dir) on free loopback ports, both stopped at
the end. MLflow is seeded in-process into the store the server then serves (with SQLite's fsync off while seeding:
through the REST API 200 versions took 35 s, so 10,000 about half an hour); the ledger is seeded through PostgreSQL,
one signed append at a time, as the pipeline writes it; the audit and verify read both through the servers.
Usage: ``.venv/bin/python bench/audit_1000.py [--versions N] [--models M] [--backend local|servers] [--profile]``.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime.now(timezone.utc) - timedelta(days=30)
TARGET_CHECKS_S = 60.0
TARGET_VERIFY_S = 2.0
WRITING = [0.0]  # seconds the ledger writer spent signing and appending (the rest of seeding is MLflow)
KINDS = ("approved", "approved", "approved", "rejected", "pending")  # 3 in 5 approved, 1 rejected, 1 pending


@dataclass
class Seeded:
    """One version as MLflow holds it, waiting for its ledger events."""

    n: int  # its place in the ledger: dated T0 + n minutes
    name: str
    version: str
    kind: str
    facts: dict[str, str]
    mv: Any


# --- servers -----------------------------------------------------------------------------------------------------


@contextmanager
def _postgres() -> Iterator[str]:
    from tests.pg import PgServer, _as_server_user, _free_port, pg_bin_dir, DB_USER, OS_USER

    bin_dir = pg_bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl, no pg_ctl on PATH); "
                         "install it with `apt-get install -y postgresql-15` or use --backend local")
    as_user = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="adaptrail-bench-pg-"))
    if as_user:
        shutil.chown(root, OS_USER, OS_USER)
    pg = PgServer(bin_dir, root, _free_port(), as_user)
    try:
        pg.run("initdb", "-D", str(pg.data_dir), "-U", DB_USER, "--auth=trust", "-E", "UTF8", "--no-locale")
        pg.start()
        pg.create_database("ledger")
        yield pg.url("ledger", driver="postgresql")
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _mlflow_server(home: Path) -> Iterator[str]:
    from flows.serve import mlflow_server, start, stop, wait_until_up
    from tests.pg import _free_port

    spec = mlflow_server(_free_port())
    proc = start(spec, home / "logs")
    try:
        wait_until_up(spec, proc, timeout=150)
        yield spec.url
    finally:
        stop(proc)


# --- seeding -----------------------------------------------------------------------------------------------------


def seed(n_versions: int, n_models: int, home: Path, threads: int) -> int:
    """``n_versions`` over ``n_models`` models through the MLflow client (``threads`` models at a time), each
    version's ledger events signed in order by one writer as MLflow returns them; the last approved version of each
    model is its champion. Returns the number of ledger events written."""
    from tests.builders import setup_people

    from tasks.governance import registry

    signers = setup_people(home)  # the keys and a policy signed by the admin, in the ledger first
    c = registry.client()
    exp = registry.ensure_experiment(c, "bench")
    per_model = n_versions // n_models
    done: queue.Queue = queue.Queue()
    workers = ThreadPoolExecutor(threads)
    futures = [workers.submit(_seed_model_or_say, c, exp, m, per_model, home, done) for m in range(n_models)]
    try:
        written = _write_ledger(done, n_models * per_model, signers)
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
    for f in futures:
        f.result()
    return written


def _seed_model_or_say(c: Any, exp: str, m: int, per_model: int, home: Path, done: queue.Queue) -> None:
    """:func:`_seed_model`, handing its error to the ledger writer (which waits for its versions) if it fails."""
    try:
        _seed_model(c, exp, m, per_model, home, done)
    except BaseException as err:
        done.put(err)
        raise


def _seed_model(c: Any, exp: str, m: int, per_model: int, home: Path, done: queue.Queue) -> None:
    from mlflow.entities import Metric

    from tasks.governance import registry
    from tasks.training.adapter_files import write_manifest
    from tasks.core.names import ALIAS_CHAMPION, ARTIFACT_ADAPTER, GATES, Tag

    name, champion = f"bench-model-{m}", None
    registry.ensure_registered_model(c, name)
    for i in range(per_model):
        n = m * per_model + i
        run = c.create_run(exp).info
        run_id = run.run_id
        f1, stamp = 0.6 + 0.3 * ((n * 37) % 100) / 100, int(time.time() * 1000)
        c.log_batch(run_id, metrics=[Metric("test_macro_f1", f1, stamp, 0), Metric("test_accuracy", f1 + 0.03, stamp, 0)])
        folder = home / "adapters" / f"{name}-{i}"  # the run's output; the version's source is its logged copy
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(os.urandom(2048))
        (folder / "adaptrail.json").write_text('{"labels": ["a", "b"]}')
        kind = KINDS[n % 5]
        gates = {g: "failed" if kind == "rejected" and g == "bias" else "passed" for g in GATES}
        facts = {Tag.ADAPTER_DIGEST: write_manifest(folder), Tag.DATASET_DIGEST: "d" * 64, Tag.BASE_MODEL: "tiny",
                 Tag.BASE_MODEL_REVISION: "local", Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.REQUESTED_BY: "carol",
                 **{Tag.gate(g): o for g, o in gates.items()}}
        seeded = Seeded(n, name, str(i + 1), kind, facts, None)
        # the tags mirror the ledger's last word on the version's state
        state = next(extra["tags"] for *_, extra in reversed(_events(seeded, {})) if "tags" in extra)
        champion = seeded.version if kind == "approved" else champion
        tags = facts | state | {Tag.CODE_VERSION: "bench", Tag.FLOW_RUN_ID: f"flow-{n}"}
        registry.log_path(c, run_id, folder, ARTIFACT_ADAPTER)  # as the register step stores it
        seeded.mv = c.create_model_version(name, source=f"{run.artifact_uri.rstrip('/')}/{ARTIFACT_ADAPTER}",
                                           run_id=run_id, tags=tags)  # registry.artifact_uri, without a get_run
        assert str(seeded.mv.version) == seeded.version, (name, seeded.mv.version, seeded.version)
        done.put(seeded)
    if champion:
        registry.set_alias(c, name, ALIAS_CHAMPION, champion)


def _write_ledger(done: queue.Queue, total: int, signers: dict[str, Any]) -> int:
    """Each version's events as the pipeline and the approver write them: ``registered`` (+ ``gate_failed``) signed
    by the service key, ``approved`` signed by alice; in order of ``n`` (versions arriving early wait)."""
    from tasks.governance import trust
    from tasks.governance.ledger import Ledger
    from tasks.governance.ledger_view import identity_of

    written = 0
    with Ledger() as led:
        t = trust.read(led)
        policy = t.require_policy()
        early: dict[int, Seeded] = {}
        for k in range(total):
            while k not in early:
                s = done.get(timeout=600)
                if isinstance(s, BaseException):
                    raise RuntimeError(f"seeding MLflow failed: {s!r}") from s
                early[s.n] = s
            s = early.pop(k)
            at = T0 + timedelta(minutes=s.n)
            for action, actor, reason, extra in _events(s, identity_of(s.mv)):
                d = trust.draft(t, s.name, s.version, action, actor, reason, "", extra, at)
                started = time.perf_counter()
                e = trust.commit(led, d, signers[actor].sign(d.statement), policy)
                WRITING[0] += time.perf_counter() - started
                t.last_hash[(s.name, s.version)], t.stored_last[(s.name, s.version)] = e.hash, e.seq
                written += 1
    return written


def _events(s: Seeded, identity: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(action, actor, reason, extra) of the version's events, all dated T0 + n minutes."""
    from tasks.core.names import GATES, Tag

    at = T0 + timedelta(minutes=s.n)
    first = "rejected" if s.kind == "rejected" else "pending"
    state = _state(first, "pipeline", at, f"registered as {first}", "")
    gates = {g: s.facts[Tag.gate(g)] for g in GATES}
    out = [("registered", "pipeline", state[Tag.APPROVAL_REASON], {"tags": s.facts | state, "gates": gates,
                                                                    "identity": identity, "requested_by": "carol"})]
    out += [("gate_failed", "pipeline", f"gate {g} failed", {"gate": g}) for g, o in gates.items() if o == "failed"]
    if s.kind == "approved":
        due = (at + timedelta(days=182)).date().isoformat()
        out.append(("approved", "alice", "beats champion", {"tags": _state("approved", "alice", at, "beats champion",
                                                                            due), "approvers": ["alice"]}))
    return out


def _state(status: str, by: str, at: datetime, reason: str, due: str) -> dict[str, str]:
    from tasks.core.names import Tag

    return {Tag.APPROVAL_STATUS: status, Tag.APPROVAL_BY: by, Tag.APPROVAL_AT: at.isoformat(timespec="seconds"),
            Tag.APPROVAL_REASON: reason, Tag.REVIEW_DUE: due}


# --- timing ------------------------------------------------------------------------------------------------------


def time_audit(home: Path, n_versions: int, profile: bool = False) -> bool:
    """Run the audit once with its stage timings; print them; True when the checks met their target."""
    from tasks.governance.audit_run import run_audit

    clock: dict[str, float] = {}
    start = time.perf_counter()
    with _profiled(profile):
        data, paths, _ = run_audit(out_dir=home / "report", timings=clock)
    total = time.perf_counter() - start
    s = data["summary"]
    checks, rehash = clock["collect_s"] - clock["rehash_s"], clock["rehash_s"]
    reports = clock["reports_s"] + clock["mlflow_s"]
    print(f"audit: {s['versions']} versions; verdict {s['verdict']}; findings {s['counts']}; ledger "
          f"{s['ledger_length']} events, chain {'ok' if s['chain_ok'] else 'BROKEN'}; html "
          f"{paths['html'].stat().st_size:,} bytes")
    print(f"  (a) registry and ledger checks: {checks:.1f} s = {s['versions'] / checks:.0f} versions/s")
    print(f"  (b) byte re-hash of every adapter: {rehash:.1f} s = {s['versions'] / max(rehash, 1e-9):.0f} versions/s")
    print(f"  (c) reports: {reports:.1f} s (cards + JSON/CSV/HTML {clock['reports_s']:.1f} s, MLflow run "
          f"{clock['mlflow_s']:.1f} s)")
    print(f"  total: {total:.1f} s")
    met = checks < TARGET_CHECKS_S and s["versions"] == n_versions
    print(f"target (a) < {TARGET_CHECKS_S:.0f} s: " + ("met" if met else f"MISSED ({checks:.1f} s for "
                                                         f"{s['versions']} versions; see the profile)"))
    return met


def time_verify(ref: str, profile: bool = False) -> bool:
    """``adaptrail verify`` of one version: once cold, then timed warm in the same process."""
    from tasks.governance.loader import verify

    start = time.perf_counter()
    verify(ref)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    with _profiled(profile):
        report = verify(ref)
    warm = time.perf_counter() - start
    failed = ", ".join(c.name for c in report.failures) or "none"
    print(f"verify {ref}: cold {cold:.2f} s, warm {warm:.2f} s ({len(report.checks)} checks, failed: {failed})")
    met = warm < TARGET_VERIFY_S
    print(f"target verify warm < {TARGET_VERIFY_S:.0f} s: " + ("met" if met else f"MISSED ({warm:.2f} s)"))
    return met


def tamper(home: Path) -> None:
    """One flipped bit in the stored copy of one adapter (bench-model-0 v1): the audit must report exactly 1
    critical finding."""
    from tasks.governance import registry

    run_id = registry.model_version(registry.client(), "bench-model-0", "1").run_id
    stored = [p for p in (home / "mlartifacts").rglob("adapter_model.safetensors") if run_id in p.parts]
    if len(stored) != 1:
        raise RuntimeError(f"expected one stored adapter of run {run_id} under {home / 'mlartifacts'}, found {stored}")
    path = stored[0]
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])


def run(args: argparse.Namespace, home: Path) -> bool:
    """Seed, then time the audit and verify (with ``--backend servers`` both servers up around them)."""
    with ExitStack() as stack:
        if args.backend == "servers":
            os.environ["ADAPTRAIL_LEDGER_URL"] = stack.enter_context(_postgres())
        start = time.perf_counter()
        with _sqlite_unsynced():
            events = seed(args.versions, args.models, home, args.threads)
        tamper(home)
        print(f"seeded {args.versions} versions of {args.models} models ({events} signed ledger events) in "
              f"{time.perf_counter() - start:.1f} s (ledger writer busy {WRITING[0]:.1f} s of it)", flush=True)
        if args.backend == "servers":
            start = time.perf_counter()
            os.environ["MLFLOW_TRACKING_URI"] = stack.enter_context(_mlflow_server(home))
            print(f"mlflow server {os.environ['MLFLOW_TRACKING_URI']} up in {time.perf_counter() - start:.1f} s; "
                  f"ledger {os.environ['ADAPTRAIL_LEDGER_URL']}", flush=True)
        return _timed(args, home)


def _timed(args: argparse.Namespace, home: Path) -> bool:
    audit_met = time_audit(home, args.versions, args.profile)
    verify_met = time_verify(f"bench-model-{min(1, args.models - 1)}@champion", args.profile)
    return audit_met and verify_met


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=1000)
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--backend", choices=("local", "servers"), default="local")
    p.add_argument("--profile", action="store_true", help="print the audit's and verify's cProfile (top 60)")
    p.add_argument("--threads", type=int, default=1, help="models seeded at once (MLflow writes)")
    args = p.parse_args()
    if args.versions < args.models or args.models < 1 or args.versions % args.models:
        p.error("--versions must be a positive multiple of --models")
    home = Path(tempfile.mkdtemp(prefix="adaptrail-bench-"))
    os.environ["ADAPTRAIL_HOME"] = str(home)
    for name in ("MLFLOW_TRACKING_URI", "ADAPTRAIL_LEDGER_URL", "ADAPTRAIL_ARTIFACT_ROOT"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    from tasks.core.state import apply_environment_defaults

    apply_environment_defaults()
    print(f"backend {args.backend}: {args.versions} versions of {args.models} models in {home}", flush=True)
    return 0 if run(args, home) else 1


@contextmanager
def _sqlite_unsynced() -> Iterator[None]:
    """SQLite connections opened in this process skip fsync (``PRAGMA synchronous=OFF``) inside the block: seeding
    only; the audit runs with the stores' own settings."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def unsynced(dbapi_conn: Any, _record: Any) -> None:
        if type(dbapi_conn).__module__.startswith("sqlite3"):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous = OFF")
            cur.close()

    event.listen(Engine, "connect", unsynced)
    try:
        yield None
    finally:
        event.remove(Engine, "connect", unsynced)


@contextmanager
def _profiled(on: bool) -> Iterator[None]:
    """cProfile the block when ``on``; print its top functions by cumulative time."""
    if not on:
        yield None
        return
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    try:
        yield None
    finally:
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    sys.exit(main())
