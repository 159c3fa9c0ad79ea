"""Data-parallel training in several processes (``training.processes > 1``), launched with torchrun.

The parent writes a job spec (config, data, base model, output dir) and runs ``torch.distributed.run``; every rank
attaches the method, wraps the model in DistributedDataParallel and runs the usual ``tasks.training.train`` loop
on its equal-sized shard of the training data; rank 0 saves the adapter and the gathered stats. The parent then
loads the adapter onto a fresh base, so evaluation, gates and registration run in-process as with one process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

from tasks.adapter import recompute_digest
from tasks.config import Config
from tasks.data import LABEL, TEXT
from tasks.errors import AdaptrailError, InputError
from tasks.model import BaseModelRef, count_parameters, load_classifier, load_tokenizer, wrap_with_peft
from tasks.names import ADAPTER_MANIFEST, ARTIFACT_ADAPTER, ARTIFACT_REPORTS, RUN_TAG_STAGE
from tasks.training import Encoded, TrainStats, encode, seed_everything

if TYPE_CHECKING:
    from tasks.steps import RunContext, TrainedAdapter

log = logging.getLogger("adaptrail")

JOB_DIR = "distributed"  # under the run's workdir
SPEC_FILE = "spec.json"
STATS_FILE = "stats.json"
STATS_REPORT = "distributed_training.json"  # the stats, logged with the run's reports
LAUNCH_TIMEOUT_S = 24 * 3600  # the whole torchrun job; a hung collective fails sooner (COLLECTIVE_TIMEOUT_S)
COLLECTIVE_TIMEOUT_S = 30 * 60
TAIL_LINES = 20


class DistributedTrainingFailed(AdaptrailError):
    """A training process failed or the job timed out; the message names the rank and its last log lines."""


# --- parent: plan, launch, collect --------------------------------------------------------------------------


def resolve_backend(backend: str, processes: int) -> str:
    """``auto`` -> nccl with CUDA, else gloo; nccl needs one GPU per process."""
    import torch

    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
    if chosen == "nccl" and cuda < processes:
        raise InputError(f"training.backend nccl needs one CUDA GPU per process: training.processes={processes}, "
                         f"GPUs found: {cuda}; lower training.processes or set training.backend=gloo (CPU)")
    return chosen


def shard(n: int, world_size: int, rank: int) -> list[int]:
    """Rank's example indices: strided over the data, padded by wrapping around so every rank gets
    ``ceil(n / world_size)`` examples (and so the same number of batches: DDP hangs otherwise)."""
    if n < 1 or not 0 <= rank < world_size:
        raise InputError(f"cannot shard {n} examples for rank {rank} of {world_size}; need at least one example")
    per_rank = -(-n // world_size)
    padded = [i % n for i in range(per_rank * world_size)]
    return padded[rank::world_size]


def threads_per_process(num_threads: int | None, processes: int) -> int:
    """Configured torch threads, else this machine's cores shared among the processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return num_threads or max(1, cores // processes)


def write_spec(ctx: RunContext, job_dir: Path, backend: str, adapter_dir: Path) -> Path:
    """Everything a rank needs, as files: the resolved config, the train/validation frames, the base, outputs."""
    from tasks.steps import adapter_metadata

    job_dir.mkdir(parents=True, exist_ok=True)
    frames = {}
    for name, frame in (("train", ctx.splits.train), ("validation", ctx.splits.validation)):
        frames[name] = str(job_dir / f"{name}.parquet")
        frame[[TEXT, LABEL]].astype(str).to_parquet(frames[name], index=False)
    spec = {"config": ctx.config.model_dump(mode="json"), "base": ctx.base.to_dict(), "labels": ctx.splits.labels,
            "backend": backend, "data": frames, "adapter_dir": str(adapter_dir), "stats": str(job_dir / STATS_FILE),
            "metadata": adapter_metadata(ctx), "collective_timeout_s": COLLECTIVE_TIMEOUT_S}
    path = job_dir / SPEC_FILE
    path.write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun_command(spec_path: Path, processes: int, log_dir: Path) -> list[str]:
    """``torchrun`` in module form: one node, ``processes`` ranks running ``python -m tasks.distributed SPEC``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "--log-dir", str(log_dir),
            "--tee", "3", "-m", "tasks.distributed", str(spec_path)]


def launch(spec_path: Path, processes: int, threads: int, timeout_s: float = LAUNCH_TIMEOUT_S) -> None:
    """Run the ranks; stream their output to the log; raise naming the failed rank(s) on a non-zero exit."""
    job_dir = spec_path.parent
    log_dir = job_dir / "logs"
    root = str(Path(__file__).resolve().parents[1])  # the ranks run this checkout's code
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
    from tasks import registry, reports
    from tasks.adapter import dir_size, read_metadata
    from tasks.methods import load_weights
    from tasks.steps import TrainedAdapter

    cfg = ctx.config
    processes = cfg.training.processes
    backend = resolve_backend(cfg.training.backend, processes)
    if len(ctx.splits.train) < processes:
        raise InputError(f"training.processes={processes} exceeds the {len(ctx.splits.train)} training rows; "
                         "lower training.processes")
    # Built here as on every rank: a bad method option fails before any process starts, and counts match.
    seed_everything(cfg.training.seed)
    base_model, fresh = load_classifier(ctx.base, cfg.model, ctx.splits.labels)
    trainable, total = count_parameters(wrap_with_peft(base_model, cfg.peft, cfg.model.task, fresh))
    del base_model
    adapter_dir = ctx.workdir / ARTIFACT_ADAPTER
    spec = write_spec(ctx, ctx.workdir / JOB_DIR, backend, adapter_dir)
    c = registry.client()
    registry.set_run_tags(c, ctx.run_id, {RUN_TAG_STAGE: "training"})
    log.info("training with %d %s processes (torchrun)", processes, backend)
    launch(spec, processes, threads_per_process(cfg.training.num_threads, processes), timeout_s)

    gathered = json.loads((spec.parent / STATS_FILE).read_text(encoding="utf-8"))
    stats = TrainStats(**{k: gathered[k] for k in ("epochs", "steps", "seconds", "real_tokens", "padded_tokens",
                                                   "history")})
    for record in stats.history:
        registry.log_metrics(c, ctx.run_id, {k: v for k, v in record.items() if k != "epoch"},
                             step=int(record["epoch"]))
    reports.write_json(ctx.workdir / ARTIFACT_REPORTS / STATS_REPORT, gathered)
    digest = recompute_digest(adapter_dir)
    claimed = json.loads((adapter_dir / ADAPTER_MANIFEST).read_text(encoding="utf-8"))["digest"]
    if digest != claimed:
        raise DistributedTrainingFailed(f"{adapter_dir}: the files on disk do not match the manifest rank 0 wrote")
    size = dir_size(adapter_dir)
    registry.log_metrics(c, ctx.run_id, {"train_seconds": stats.seconds,
                                         "train_tokens_per_second": stats.tokens_per_second,
                                         "trainable_params": trainable, "adapter_bytes": size})
    fresh_base, _ = load_classifier(ctx.base, cfg.model, ctx.splits.labels)
    model = load_weights(fresh_base, adapter_dir, read_metadata(adapter_dir))
    return TrainedAdapter(model=model, tokenizer=load_tokenizer(ctx.base, cfg.model), adapter_dir=adapter_dir,
                          digest=digest, size_bytes=size, trainable_params=trainable, total_params=total,
                          stats=stats, max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)


# --- rank: one training process ------------------------------------------------------------------------------


def _encoded(tokenizer, frame: pd.DataFrame, labels: list[str], max_length: int) -> Encoded:
    index = {label: i for i, label in enumerate(labels)}
    return encode(tokenizer, list(frame[TEXT]), [index[y] for y in frame[LABEL]], max_length)


def _validation_logits(module, enc: Encoded, pad_id: int, batch_size: int, device):
    """``tasks.training.predict_logits`` on the rank's device."""
    import numpy as np
    import torch

    from tasks.training import collate

    module.eval()
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])
    out = np.zeros((len(enc), module.config.num_labels), dtype=np.float32)
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            batch = order[k:k + batch_size]
            inputs = {n: t.to(device) for n, t in collate(enc, batch, pad_id).items() if n != "labels"}
            out[batch] = module(**inputs).logits.float().cpu().numpy()
    return out


def train_rank(spec: dict[str, Any]) -> None:
    """One rank: shard, train under DDP, gather the stats; rank 0 saves the adapter and the stats JSON."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tasks.adapter import save_adapter
    from tasks.regression import classification_metrics
    from tasks.training import collate, train

    cfg = Config.model_validate(spec["config"])
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if spec["backend"] == "nccl" \
        else torch.device("cpu")
    labels, max_length = spec["labels"], cfg.model.max_length
    base = BaseModelRef(**spec["base"])

    seed_everything(cfg.training.seed)
    tokenizer = load_tokenizer(base, cfg.model)
    model, fresh = load_classifier(base, cfg.model, labels)
    model = wrap_with_peft(model, cfg.peft, cfg.model.task, fresh).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  forward_sync_buffers=False)  # rank 0 alone runs validation forwards
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train_frame = pd.read_parquet(spec["data"]["train"])
    mine = _encoded(tokenizer, train_frame.iloc[shard(len(train_frame), world, rank)], labels, max_length)
    val = _encoded(tokenizer, pd.read_parquet(spec["data"]["validation"]), labels, max_length) if rank == 0 \
        else Encoded([], [])

    def on_device(enc: Encoded, batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        return {n: t.to(device) for n, t in collate(enc, batch, pad_id).items()}

    def validate(m) -> dict[str, float]:  # only called where val is non-empty: rank 0
        logits = _validation_logits(m.module, val, pad, cfg.training.eval_batch_size, device)
        loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(val.labels))
        met = classification_metrics([labels[i] for i in val.labels], [labels[i] for i in logits.argmax(1)], labels)
        return {"val_loss": float(loss), "val_accuracy": met["accuracy"], "val_macro_f1": met["macro_f1"]}

    stats = train(ddp, mine, val, pad, cfg.training, collate_fn=on_device, validate=validate)
    trained = [p.detach().cpu().contiguous().numpy().tobytes() for p in ddp.module.parameters() if p.requires_grad]
    mine_stats = {"rank": rank, "examples": len(mine), "steps": stats.steps, "seconds": stats.seconds,
                  "real_tokens": stats.real_tokens, "padded_tokens": stats.padded_tokens,
                  "train_loss": [r["train_loss"] for r in stats.history],
                  "weights_sha256": hashlib.sha256(b"".join(trained)).hexdigest()}  # DDP keeps ranks identical
    every: list[Any] = [None] * world
    dist.all_gather_object(every, mine_stats)
    if rank == 0:
        save_adapter(ddp.module, Path(spec["adapter_dir"]), spec["metadata"], cfg.peft)
        Path(spec["stats"]).write_text(json.dumps(merge_stats(stats, every, spec["backend"]), indent=2) + "\n",
                                       encoding="utf-8")


def merge_stats(rank0: TrainStats, every: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """One TrainStats for the job: steps are per rank (synchronous), tokens summed, time the slowest rank's,
    each epoch's train_loss the mean over ranks (equal batches per rank); validation metrics are rank 0's."""
    history = [{**record, "train_loss": sum(r["train_loss"][e] for r in every) / len(every)}
               for e, record in enumerate(rank0.history)]
    return {"epochs": rank0.epochs, "steps": rank0.steps, "seconds": max(r["seconds"] for r in every),
            "real_tokens": sum(r["real_tokens"] for r in every),
            "padded_tokens": sum(r["padded_tokens"] for r in every),
            "history": history, "world_size": len(every), "backend": backend, "ranks": every}


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun rank: ``python -m tasks.distributed SPEC``."""
    import torch
    import torch.distributed as dist
    from torch.distributed.elastic.multiprocessing.errors import record

    @record  # writes the rank's exception to torchrun's error file, which the parent reports
    def run(spec_path: str) -> None:
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        if spec["backend"] == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(spec["backend"], timeout=timedelta(seconds=spec["collective_timeout_s"]))
        try:
            train_rank(spec)
        finally:
            dist.destroy_process_group()

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: torchrun ... -m tasks.distributed SPEC_JSON (written by train_distributed)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # per-epoch lines, streamed by the parent
    run(args[0])


if __name__ == "__main__":
    main()
