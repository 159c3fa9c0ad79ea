"""Benchmark: monitoring on real data, and its throughput on 10,000 texts (issue 15).

In a scratch state: an SMS-spam filter (MiniLM + the default LoRA recipe, ``configs/sms_spam.yaml``, a short
training) is trained on 70% of the SMS Spam Collection (``../shared/data``; read there, the split is written to a
temporary folder), approved, then monitored with

1. the 30% of SMS texts it never saw, with labels — new data from the same source: expected to pass;
2. the example support tickets (``examples/support_tickets.csv``, no labels) — another domain: expected drift;
3. 10,000 texts (CLINC150 utterances, sampled with a fixed seed), timed end to end: texts per second.

Prints each run's outcome and drift effects, and the throughput. Usage:
``.venv/bin/python bench/monitor_throughput.py [--texts 10000] [--steps 60]`` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
MODEL = "sms-spam-filter"


def cli(*args: str) -> int:
    from flows.cli import main

    return main(list(args))


def train_and_approve(work: Path, steps: int) -> pd.DataFrame:
    """Train on 70% of SMS spam, approve as alice; returns the held-back 30% (never seen in training)."""
    sms = pd.read_csv(SHARED / "sms_spam" / "normalized.csv")
    held = sms.sample(frac=0.3, random_state=7)
    train_path = work / "sms_train.csv"
    sms.drop(held.index).to_csv(train_path, index=False)
    from tasks.governance import policy_admin

    admin = policy_admin.init(None, None).admin_key  # what `adaptrail init` does
    keys = Path(os.environ["ADAPTRAIL_HOME"]) / "keys"
    assert cli("keygen", "alice", "--out", str(keys / "alice")) == 0
    assert cli("policy", "add", "alice", "--role", "approver", "--pubkey", str(keys / "alice.pub"),
               "--key", str(admin)) == 0
    code = cli("run", "--config", str(ROOT / "configs" / "sms_spam.yaml"), "--set", f"data.path={train_path}",
               "--set", "training.epochs=1", "--set", f"training.max_steps={steps}")
    assert code == 0, f"training exited {code}"
    assert cli("approve", f"{MODEL}/1", "--reason", "bench", "--key", str(keys / "alice")) == 0
    return held


def monitored(label: str, data: Path) -> dict:
    from tasks.steps.monitor import run_monitor

    start = time.perf_counter()
    result = run_monitor(f"{MODEL}@champion", str(data))
    seconds = time.perf_counter() - start
    effects = ", ".join(f"{k} {m['effect']:.3f}" for k, m in (result.get("drift") or {}).items())
    perf = result.get("performance", {}).get("batch", {})
    extra = (f"; accuracy {perf['accuracy']['value']} {perf['accuracy']['ci']}, macro-F1 {perf['macro_f1']['value']}"
             if perf else "")
    print(f"{label}: {result['rows']} texts -> {result['outcome'].upper()} in {seconds:.1f} s "
          f"(breaches: {', '.join(result.get('breaches', [])) or 'none'}); effects: {effects}{extra}", flush=True)
    return result | {"seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=10_000, help="texts in the timed batch")
    p.add_argument("--steps", type=int, default=60, help="training steps of the SMS filter")
    args = p.parse_args()
    if not (SHARED / "sms_spam" / "normalized.csv").is_file():
        sys.exit(f"needs {SHARED}/sms_spam and clinc150 (the shared data sets)")
    with tempfile.TemporaryDirectory(prefix="adaptrail-bench-monitor-") as tmp:
        work = Path(tmp)
        os.environ["ADAPTRAIL_HOME"] = str(work / "state")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        held = train_and_approve(work, args.steps)
        held.to_csv(work / "sms_new.csv", index=False)
        same = monitored("SMS texts it never saw (labelled)", work / "sms_new.csv")
        tickets = pd.read_csv(ROOT / "examples" / "support_tickets.csv")[["text"]]
        tickets.to_csv(work / "tickets.csv", index=False)
        other = monitored("support tickets (another domain)", work / "tickets.csv")
        clinc = pd.read_csv(SHARED / "clinc150" / "normalized.csv")
        batch = clinc[["text"]].sample(n=args.texts, replace=len(clinc) < args.texts, random_state=3)
        batch.to_csv(work / "batch.csv", index=False)
        timed = monitored(f"{args.texts:,} CLINC150 utterances (timed)", work / "batch.csv")
        print(f"\nthroughput: {args.texts / timed['seconds']:.0f} texts/s end to end for {args.texts:,} texts "
              f"({timed['seconds']:.1f} s: verify + load, scoring reference and batch with the adapter and the base "
              f"encoder, statistics, MLflow run, ledger event); torch threads {__import__('torch').get_num_threads()}")
        print(f"outcomes: same source {same['outcome']}, tickets {other['outcome']}, CLINC150 {timed['outcome']}")


if __name__ == "__main__":
    main()
