"""Benchmark: the compliance audit over 1,000 registered versions (target: under 60 s).

Seeds a temporary state dir directly (MLflow versions with every tag, runs with metrics, small real adapter
folders with manifests, ledger events), then times the whole audit: expiry, collect (re-hashing every adapter),
findings, JSON/CSV/HTML and the MLflow run. Usage: ``.venv/bin/python bench/audit_1000.py [--versions N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = 10
T0 = datetime.now(timezone.utc) - timedelta(days=30)


def seed(n_versions: int, home: Path) -> None:
    """``n_versions`` over MODELS models: 3 in 5 approved (the last is champion), 1 in 5 rejected, rest pending."""
    from mlflow.entities import Metric

    from tasks.governance import registry
    from tasks.training.adapter_files import write_manifest
    from tasks.governance.ledger import Ledger
    from tasks.core.names import ALIAS_CHAMPION, GATES, Tag

    c = registry.client()
    exp = registry.ensure_experiment(c, "bench")
    led = Ledger()
    per_model = n_versions // MODELS
    for m in range(MODELS):
        name = f"bench-model-{m}"
        registry.ensure_registered_model(c, name)
        champion = None
        for i in range(per_model):
            n = m * per_model + i
            run_id = c.create_run(exp).info.run_id
            f1 = 0.6 + 0.3 * ((n * 37) % 100) / 100
            stamp = int(time.time() * 1000)
            c.log_batch(run_id, metrics=[Metric("test_macro_f1", f1, stamp, 0),
                                         Metric("test_accuracy", f1 + 0.03, stamp, 0)])
            folder = home / "adapters" / f"{name}-{i}"
            folder.mkdir(parents=True)
            (folder / "adapter_model.safetensors").write_bytes(os.urandom(2048))
            (folder / "adaptrail.json").write_text('{"labels": ["a", "b"]}')
            digest = write_manifest(folder)
            kind = ("approved", "approved", "approved", "rejected", "pending")[n % 5]
            gates = {g: "failed" if kind == "rejected" and g == "bias" else "passed" for g in GATES}
            at = T0 + timedelta(minutes=n)
            facts = {Tag.ADAPTER_DIGEST: digest, Tag.DATASET_DIGEST: "d" * 64, Tag.BASE_MODEL: "tiny",
                     Tag.BASE_MODEL_REVISION: "local", Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.REQUESTED_BY: "carol",
                     **{Tag.gate(g): o for g, o in gates.items()}}
            first = "rejected" if kind == "rejected" else "pending"
            state = _state(first, "adaptrail/gates", at, f"registered as {first}", "")
            led.append(name, str(i + 1), "registered", "carol", state[Tag.APPROVAL_REASON],
                       extra={"tags": facts | state, "gates": gates}, at=at)
            if kind == "approved":
                due = (at + timedelta(days=182)).date().isoformat()
                state = _state("approved", "alice", at, "beats champion", due)
                led.append(name, str(i + 1), "approved", "alice", "beats champion",
                           extra={"tags": state, "approvers": ["alice"], "failed_gates": []}, at=at)
                champion = str(i + 1)
            tags = facts | state | {Tag.CODE_VERSION: "bench", Tag.FLOW_RUN_ID: f"flow-{n}"}
            mv = c.create_model_version(name, source=folder.as_uri(), run_id=run_id, tags=tags)
            assert str(mv.version) == str(i + 1)
        if champion:
            registry.set_alias(c, name, ALIAS_CHAMPION, champion)
    led.close()


def _state(status: str, by: str, at: datetime, reason: str, due: str) -> dict[str, str]:
    from tasks.core.names import Tag

    return {Tag.APPROVAL_STATUS: status, Tag.APPROVAL_BY: by, Tag.APPROVAL_AT: at.isoformat(timespec="seconds"),
            Tag.APPROVAL_REASON: reason, Tag.REVIEW_DUE: due}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=1000)
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="adaptrail-bench-"))
    os.environ["ADAPTRAIL_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("ADAPTRAIL_LEDGER_URL", None)
    sys.path.insert(0, str(ROOT))
    from tasks.core.state import apply_environment_defaults

    apply_environment_defaults()
    from tasks.governance.audit_run import run_audit

    start = time.perf_counter()
    seed(args.versions, home)
    tampered = home / "adapters" / "bench-model-0-0" / "adapter_model.safetensors"
    data = tampered.read_bytes()
    tampered.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # one flipped bit: expect exactly 1 critical finding
    seeded = time.perf_counter() - start
    print(f"seeded {args.versions} versions of {MODELS} models in {seeded:.1f} s ({home})")

    start = time.perf_counter()
    data, paths, _ = run_audit(out_dir=home / "report")
    took = time.perf_counter() - start
    s = data["summary"]
    print(f"audit: {s['versions']} versions in {took:.1f} s = {s['versions'] / took:.1f} versions/s; "
          f"verdict {s['verdict']}; findings {s['counts']}; ledger {s['ledger_length']} events, "
          f"chain {'ok' if s['chain_ok'] else 'BROKEN'}; html {paths['html'].stat().st_size:,} bytes")
    print(f"target < 60 s: {'met' if took < 60 else 'MISSED'}")
    return 0 if took < 60 and s["versions"] == args.versions else 1


if __name__ == "__main__":
    sys.exit(main())
