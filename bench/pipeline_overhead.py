"""Benchmark: the pipeline's own cost (issue 17) -- how much of ``make run`` is not training.

Runs the main flow end to end exactly as ``make run`` does (``adaptrail init``, then ``adaptrail run --config
configs/default.yaml``, with its temporary Prefect server) in a fresh temporary state directory, and times the
``adaptrail run`` process from outside (process start, imports and shutdown included). The step times come from the
flow run itself: Prefect's task runs (start and end times, read back from the run's Prefect database after the
process ended), the gap before the flow run began and after it ended from the process's own output (each line is
timestamped as it arrives). Scoring throughput (texts/s) comes from the metrics the run logged to MLflow
(``scoring.<step>.texts`` and ``scoring.<step>.seconds``).

Prints each step's wall time, the training seconds, the seconds NOT training and their share, the target
"<= 20 s outside training" (met/MISSED), and the scoring throughput. Usage:
``.venv/bin/python bench/pipeline_overhead.py [--config configs/default.yaml] [--set key=value ...]`` (about 3
minutes on 2 CPU cores; ``--set training.max_steps=2 --set training.epochs=1`` for a quick smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 20.0  # at most this much of `make run`'s wall time outside training (issue 17)
TRAIN_TASK = "train-adapter"
#: Prefect task name -> what the step is, as printed (tasks not listed are printed by their own name).
STEP_LABELS = {
    "load-data": "data load", "pin-base-model": "pin base model", "open-run": "open MLflow run",
    "validate-data": "GX validation gate", TRAIN_TASK: "training (base load + adapter training)",
    "evaluate": "evaluation (test, validation, train sample)", "evaluate-champion": "champion scoring",
    "bias-gate": "bias gate (groups, bootstrap, counterfactuals)", "regression-gate": "regression gate (baselines)",
    "register": "registration, signing, evidence", "publish-summary": "summary artifact (report writing)",
}
SERVER_START = "Starting temporary server on"
SERVER_STOP = "Stopping temporary server on"
MLFLOW_RUN = re.compile(r"MLflow:\s+run (\w+)")


@dataclass
class Observed:
    """The ``adaptrail run`` process as seen from outside: its wall time and each output line's arrival time."""

    code: int
    started: float  # time.time() at spawn
    ended: float  # time.time() at exit
    lines: list[tuple[float, str]] = field(default_factory=list)

    def first(self, fragment: str) -> float | None:
        return next((t for t, line in self.lines if fragment in line), None)

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def scratch_env(home: Path) -> dict[str, str]:
    """The environment of a fresh state directory: its own MLflow store, ledger, keys and Prefect home."""
    env = {**os.environ, "ADAPTRAIL_HOME": str(home)}
    for key in ("MLFLOW_TRACKING_URI", "ADAPTRAIL_LEDGER_URL", "ADAPTRAIL_ARTIFACT_ROOT", "PREFECT_API_URL",
                "PREFECT_HOME", "ADAPTRAIL_SIGNING_KEY"):
        env.pop(key, None)
    return env


def adaptrail(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "adaptrail"), *args]


def run_init(env: dict[str, str]) -> float:
    """``adaptrail init`` (keys and the signed policy), as ``make run`` runs it first; returns its seconds."""
    start = time.perf_counter()
    done = subprocess.run(adaptrail("init", "-q"), env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"adaptrail init exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - start


def run_flow(env: dict[str, str], config: str, sets: list[str], echo: bool) -> Observed:
    """``adaptrail run --config CONFIG [--set ...]`` in a subprocess, each output line timestamped on arrival."""
    command = adaptrail("run", "--config", config, *[a for s in sets for a in ("--set", s)])
    started = time.time()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
        if echo:
            print(line, end="", flush=True)
    code = proc.wait()
    return Observed(code=code, started=started, ended=time.time(), lines=lines)


async def _read_prefect(prefect_home: Path) -> tuple[object, list[object]]:
    """The flow run and its task runs, read through Prefect's client from the run's own database."""
    from prefect.client.orchestration import PrefectClient
    from prefect.server.api.server import create_app

    async with PrefectClient(api=create_app(ephemeral=True)) as client:
        flow_runs = [r for r in await client.read_flow_runs() if r.start_time is not None]
        if not flow_runs:
            raise SystemExit(f"no flow run that started in {prefect_home}")
        latest = max(flow_runs, key=lambda r: r.start_time)  # with --home kept, earlier runs are there too
        task_runs = [t for t in await client.read_task_runs() if t.flow_run_id == latest.id]
    return latest, sorted(task_runs, key=lambda t: t.start_time)


def prefect_runs(home: Path) -> tuple[object, list[object]]:
    """Read the (ended) run's Prefect database in this process: no server is started for it."""
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    return asyncio.run(_read_prefect(home / "prefect"))


def mlflow_metrics(home: Path, run_id: str) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return dict(MlflowClient(uri, registry_uri=uri).get_run(run_id).data.metrics)


def ts(moment: datetime) -> float:
    return moment.timestamp()


def segments(obs: Observed, flow_run: object, task_runs: list[object]) -> list[tuple[str, float]]:
    """The run's wall time cut into consecutive segments (they add up to the process's wall time)."""
    server = obs.first(SERVER_START)
    flow_start, flow_end = ts(flow_run.start_time), ts(flow_run.end_time)
    out: list[tuple[str, float]] = []
    if server is not None:
        out.append(("start-up: process, CLI imports, config, preflight", server - obs.started))
        out.append(("Prefect server start, flow imports (until the flow run begins)", flow_start - server))
    else:  # a Prefect server given by PREFECT_API_URL: nothing to start
        out.append(("start-up: process, imports, config (until the flow run begins)", flow_start - obs.started))
    cursor, between = flow_start, 0.0
    for tr in task_runs:
        start, end = ts(tr.start_time), ts(tr.end_time)
        between += start - cursor
        name = tr.name.rsplit("-", 1)[0]  # Prefect names a task run NAME-xyz
        out.append((name, end - start))
        cursor = end
    between += flow_end - cursor
    out.append(("Prefect orchestration between steps, close run", between))
    out.append(("shutdown: summary print, server stop, exit", obs.ended - flow_end))
    return out


def report(obs: Observed, parts: list[tuple[str, float]], metrics: dict[str, float], init_s: float) -> bool:
    """Print the step table, the training/non-training split, the target and throughput; True if the target is met."""
    wall = obs.ended - obs.started
    print(f"\n`adaptrail init` (before the run, as `make run` does; not counted below): {init_s:6.1f} s")
    print(f"{'step':<62} {'seconds':>8} {'share':>7}")
    for name, seconds in parts:
        label = f"{name}: {STEP_LABELS[name]}" if name in STEP_LABELS else name
        print(f"{label:<62} {seconds:8.1f} {seconds / wall:7.1%}")
    print(f"{'total (adaptrail run wall time, measured from outside)':<62} {wall:8.1f} {1:7.1%}")
    train = sum(s for n, s in parts if n == TRAIN_TASK)
    loop = metrics.get("train_seconds")
    outside = wall - train
    print(f"\ntraining seconds (the {TRAIN_TASK} step): {train:.1f} s"
          + (f" (of which the training loop, MLflow train_seconds: {loop:.1f} s)" if loop is not None else ""))
    print(f"seconds NOT training (outside training): {outside:.1f} s = {outside / wall:.1%} of {wall:.1f} s")
    met = outside <= TARGET_SECONDS
    biggest = max((p for p in parts if p[0] != TRAIN_TASK), key=lambda p: p[1])
    print(f"target <= {TARGET_SECONDS:.0f} s outside training: " + ("met" if met else
          f"MISSED ({outside:.1f} s; the biggest cost outside training is {biggest[0]!r}, {biggest[1]:.1f} s)"))
    for what, key in (("evaluation", "evaluate"), ("champion scoring", "champion"),
                      ("bias gate (counterfactual swaps)", "bias_gate")):
        n, s = metrics.get(f"scoring.{key}.texts"), metrics.get(f"scoring.{key}.seconds")
        if n is not None and s:
            print(f"{what} inference throughput: {n:.0f} texts in {s:.2f} s = {n / s:.1f} texts/s")
        else:
            print(f"{what} inference throughput: nothing scored (no scoring.{key}.* metrics on the run)")
    return met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/default.yaml", help="YAML config (default: configs/default.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to `adaptrail run`")
    ap.add_argument("--home", default=None, help="state directory to use (default: a fresh temporary one, removed)")
    ap.add_argument("--echo", action="store_true", help="show the run's own output as it comes")
    args = ap.parse_args(argv)
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="adaptrail-overhead-"))
    try:
        env = scratch_env(home)
        init_s = run_init(env)
        obs = run_flow(env, args.config, args.set, args.echo)
        if obs.code not in (0, 3):  # 3: a gate failed, the version is registered as rejected: a complete run
            print(obs.text()[-4000:])
            raise SystemExit(f"adaptrail run exited {obs.code}")
        flow_run, task_runs = prefect_runs(home)
        found = MLFLOW_RUN.search(obs.text())
        metrics = mlflow_metrics(home, found.group(1)) if found else {}
        report(obs, segments(obs, flow_run, task_runs), metrics, init_s)
        print(f"(exit code of adaptrail run: {obs.code}; one run; other jobs on this machine disturb the numbers)")
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
