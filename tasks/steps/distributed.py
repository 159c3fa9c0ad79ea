"""Data-parallel training in several processes (``training.processes > 1``): the parent's side, launching torchrun.

The parent writes a job spec (config, data, base model, output dir) and runs ``torch.distributed.run``; every rank
(``tasks/training/rank.py``) runs the one training path on its shard; rank 0 saves the adapter and the gathered
stats. The parent then loads the adapter onto a fresh base, so evaluation, gates and registration run in-process
as with one process.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Iterable

from tasks.core.errors import AdaptrailError, InputError
from tasks.core.names import ADAPTER_MANIFEST, ARTIFACT_ADAPTER, ARTIFACT_REPORTS
from tasks.data.splits import LABEL, TEXT
from tasks.gates import reports
from tasks.steps.common import RunContext, log_trained, start_training
from tasks.training.adapter_files import recompute_digest
from tasks.training.loop import TrainStats
from tasks.training.rank import COLLECTIVE_TIMEOUT_S, STATS_FILE
from tasks.training.recipe import TrainedAdapter, build, load_trained

log = logging.getLogger("adaptrail")

JOB_DIR = "distributed"  # under the run's workdir
SPEC_FILE = "spec.json"
STATS_REPORT = "distributed_training.json"  # the stats, logged with the run's reports
LAUNCH_TIMEOUT_S = 24 * 3600  # the whole torchrun job; a hung collective fails sooner (COLLECTIVE_TIMEOUT_S)
TAIL_LINES = 20


class DistributedTrainingFailed(AdaptrailError):
    """A training process failed or the job timed out; the message names the rank and its last log lines."""


def resolve_backend(backend: str, processes: int) -> str:
    """``auto`` -> nccl with CUDA, else gloo; nccl needs one GPU per process."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and cuda < processes:
        raise InputError(f"training.backend nccl needs one CUDA GPU per process: training.processes={processes}, "
                         f"GPUs found: {cuda}; lower training.processes or set training.backend=gloo (CPU)")
    return chosen


def threads_per_process(num_threads: int | None, processes: int) -> int:
    """Configured torch threads, else this machine's cores shared among the processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return num_threads or max(1, cores // processes)


def write_spec(ctx: RunContext, job_dir: Path, backend: str, adapter_dir: Path) -> Path:
    """Everything a rank needs, as files: the resolved config, the train/validation frames, the base, outputs."""
    job_dir.mkdir(parents=True, exist_ok=True)
    frames = {}
    for name, frame in (("train", ctx.splits.train), ("validation", ctx.splits.validation)):
        frames[name] = str(job_dir / f"{name}.parquet")
        frame[[TEXT, LABEL]].astype(str).to_parquet(frames[name], index=False)
    spec = {"config": ctx.config.model_dump(mode="json"), "base": ctx.base.to_dict(), "labels": ctx.splits.labels,
            "backend": backend, "data": frames, "adapter_dir": str(adapter_dir), "stats": str(job_dir / STATS_FILE),
            "dataset_digest": ctx.splits.digest, "collective_timeout_s": COLLECTIVE_TIMEOUT_S}
    path = job_dir / SPEC_FILE
    path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(spec_path: Path, processes: int, log_dir: Path) -> list[str]:
    """``torchrun`` in module form: one node, ``processes`` ranks running ``python -m tasks.training.rank SPEC``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--log-dir", str(log_dir),
            "--tee", "3", "-m", "tasks.training.rank", str(spec_path)]


def launch(spec_path: Path, processes: int, threads: int, timeout_s: float = LAUNCH_TIMEOUT_S) -> None:
    """Run the ranks; stream their output to the log; raise naming the failed rank(s) on a non-zero exit."""
    job_dir = spec_path.parent
    log_dir = job_dir / "logs"
    root = str(Path(__file__).resolve().parents[2])  # the ranks run this checkout's code
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(job_dir / "torchrun.log", "w", encoding="utf-8") as out:
        proc = subprocess.Popen(torchrun_command(spec_path, processes, log_dir), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        reader = threading.Thread(target=_follow, args=(proc.stdout, out, tail), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its ranks share the new session's group
            proc.wait()
            reader.join(timeout=10)
            raise DistributedTrainingFailed(f"distributed training did not finish within {timeout_s:.0f} s and was "
                                            f"stopped; last output:\n" + "".join(tail)) from None
        reader.join(timeout=10)
    if code != 0:
        message, bad_input = failure_message(log_dir, list(tail))
        raise (InputError if bad_input else DistributedTrainingFailed)(message)


def _follow(stream: Iterable[str], out, tail: deque[str]) -> None:
    for line in stream:
        out.write(line)
        tail.append(line)
        log.info("%s", line.rstrip())


def failure_message(log_dir: Path, tail: list[str]) -> tuple[str, bool]:
    """What failed, from torchrun's per-rank ``error.json`` and the last lines of that rank's log; and whether
    it was bad input (an ``InputError`` raised in a rank)."""
    parts, bad_input = [], False
    for err in sorted(log_dir.glob("**/error.json")):
        rank = err.parent.name
        raw = json.loads(err.read_text(encoding="utf-8")).get("message", "")
        text = str(raw.get("message", raw) if isinstance(raw, dict) else raw)
        bad_input |= text.startswith("InputError:")
        logged = (err.parent / "stderr.log").read_text(encoding="utf-8", errors="replace").splitlines()
        parts.append(f"rank {rank} failed: {text}\n  last lines of its log:\n"
                     + "\n".join(f"    {line}" for line in logged[-TAIL_LINES:]))
    if not parts:
        parts.append("no rank reported an error (killed by a signal or out of memory?); last output:\n"
                     + "".join(tail))
    return "distributed training failed: " + "\n".join(parts), bad_input


def train_distributed(ctx: RunContext, timeout_s: float = LAUNCH_TIMEOUT_S) -> TrainedAdapter:
    """Train with ``training.processes`` ranks; return what the single-process step returns."""
    cfg, job = ctx.config, ctx.job()
    processes = cfg.training.processes
    backend = resolve_backend(cfg.training.backend, processes)
    if len(ctx.splits.train) < processes:
        raise InputError(f"training.processes={processes} exceeds the {len(ctx.splits.train)} training rows; "
                         "lower training.processes")
    built = build(job)  # as on every rank: a bad method option fails before any process starts, and counts match
    trainable, total = built.trainable, built.total
    del built
    adapter_dir = ctx.workdir / ARTIFACT_ADAPTER
    spec = write_spec(ctx, ctx.workdir / JOB_DIR, backend, adapter_dir)
    on_epoch = start_training(ctx)
    log.info("training with %d %s processes (torchrun)", processes, backend)
    launch(spec, processes, threads_per_process(cfg.training.num_threads, processes), timeout_s)

    gathered = json.loads((spec.parent / STATS_FILE).read_text(encoding="utf-8"))
    stats = TrainStats(**{k: gathered[k] for k in ("epochs", "steps", "seconds", "real_tokens", "padded_tokens",
                                                   "history", "best_epoch")})
    for record in stats.history:
        on_epoch(int(record["epoch"]), record)
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / STATS_REPORT, gathered)
    digest = recompute_digest(adapter_dir)
    claimed = json.loads((adapter_dir / ADAPTER_MANIFEST).read_text(encoding="utf-8"))["digest"]
    if digest != claimed:
        raise DistributedTrainingFailed(f"{adapter_dir}: the files on disk do not match the manifest rank 0 wrote")
    return log_trained(ctx, load_trained(job, adapter_dir, digest, stats, trainable, total))
