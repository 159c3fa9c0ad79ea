"""One torchrun rank of data-parallel training (``python -m tasks.training.rank SPEC``; launched by
``tasks/steps/distributed.py``): its equal-sized shard through the one training path, under DDP."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.core.errors import InputError

if TYPE_CHECKING:
    from tasks.training.loop import TrainStats

# The training imports (pandas, scikit-learn, the recipe) happen inside train_rank, after the spec was read: a bad
# spec then fails every rank at once, usually before torchrun stops the slower ones, so each failed rank is reported
# (on a loaded machine a slower rank may be stopped first: then only the ranks that reported are named).

STATS_FILE = "stats.json"
COLLECTIVE_TIMEOUT_S = 30 * 60


def shard(n: int, world_size: int, rank: int) -> list[int]:
    """Rank's example indices: strided over the data, padded by wrapping around so every rank gets
    ``ceil(n / world_size)`` examples (and so the same number of batches: DDP hangs otherwise)."""
    if n < 1 or not 0 <= rank < world_size:
        raise InputError(f"cannot shard {n} examples for rank {rank} of {world_size}; need at least one example")
    per_rank = -(-n // world_size)
    padded = [i % n for i in range(per_rank * world_size)]
    return padded[rank::world_size]


def train_rank(spec: dict[str, Any]) -> None:
    """One rank: its shard through the one training path under DDP; gather the stats; rank 0 saves the adapter
    (inside ``train_adapter``) and writes the stats JSON."""
    import pandas as pd
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tasks.core.config import Config
    from tasks.training.model import BaseModelRef
    from tasks.training.recipe import Parallel, TrainingJob, train_adapter

    cfg = Config.model_validate(spec["config"])
    job = TrainingJob(config=cfg, base=BaseModelRef(**spec["base"]), labels=list(spec["labels"]),
                      dataset_digest=spec["dataset_digest"])
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if spec["backend"] == "nccl" \
        else torch.device("cpu")

    def wrap(model):  # rank 0 alone runs validation forwards, so buffers are not synced in forward
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       forward_sync_buffers=False)

    train_frame = pd.read_parquet(spec["data"]["train"])
    mine = train_frame.iloc[shard(len(train_frame), world, rank)]
    val = pd.read_parquet(spec["data"]["validation"]) if rank == 0 else train_frame.iloc[:0]
    trained = train_adapter(job, mine, val, Path(spec["adapter_dir"]) if rank == 0 else None,
                            parallel=Parallel(wrap=wrap, device=device, writer=rank == 0))
    stats = trained.stats
    weights = [p.detach().cpu().contiguous().numpy().tobytes() for p in trained.model.parameters() if p.requires_grad]
    mine_stats = {"rank": rank, "examples": len(mine), "steps": stats.steps, "seconds": stats.seconds,
                  "real_tokens": stats.real_tokens, "padded_tokens": stats.padded_tokens,
                  "train_loss": [r["train_loss"] for r in stats.history],
                  "weights_sha256": hashlib.sha256(b"".join(weights)).hexdigest()}  # DDP keeps ranks identical
    every: list[Any] = [None] * world
    dist.all_gather_object(every, mine_stats)
    if rank == 0:
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
            "history": history, "best_epoch": rank0.best_epoch, "world_size": len(every), "backend": backend,
            "ranks": every}


def main(argv: list[str] | None = None) -> None:
    """Entry point of each torchrun rank: ``python -m tasks.training.rank SPEC``."""
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
        raise SystemExit("usage: torchrun ... -m tasks.training.rank SPEC_JSON (written by train_distributed)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # per-epoch lines, streamed by the parent
    run(args[0])


if __name__ == "__main__":
    main()
