"""Multi-process training through torchrun: sharding, backend choice, failure reports, and the whole flow with two
CPU (gloo) processes registering the same adapter format and tags as one process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.builders import people_now

from tasks.core.config import TrainingConfig
from tasks.core.config_files import load_config
from tasks.steps.distributed import DistributedTrainingFailed, launch, resolve_backend, threads_per_process
from tasks.training.rank import shard
from tasks.core.errors import InputError
from tasks.training.loop import make_batches

# One epoch of a shard (about 420 training rows / 2 ranks / 16 = 14 batches) stays under tiny.yaml's max_steps (20),
# so each rank runs out of batches, not of steps: both must still run the same number of steps.
FLOW = ["training.epochs=1", "training.batch_size=16", "training.learning_rate=0.01", "model.max_length=32",
        "gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point", "gates.bias.min_group_size=10",
        "gates.regression.min_group_size=10", "gates.regression.min_margin_over_baseline=-1.0",
        "gates.regression.baselines=[majority]", "gates.bias.max_accuracy_gap=1.0",
        "gates.bias.max_equalized_odds_difference=1.0", "gates.bias.min_disparate_impact_ratio=0.0",
        "gates.bias.max_counterfactual_flip_rate=1.0", "gates.bias.max_counterfactual_prob_change=1.0"]


@pytest.mark.parametrize("n", [1, 2, 5, 31, 32, 33, 100])
@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_every_rank_gets_the_same_number_of_batches_and_the_shards_cover_the_data(n, world, batch_size):
    shards = [shard(n, world, r) for r in range(world)]
    assert set().union(*shards) == set(range(n))
    assert len({len(s) for s in shards}) == 1
    assert sum(len(s) for s in shards) - n < world, "at most world-1 examples are repeated to even the shards"
    for group in (True, False):
        counts = {len(make_batches([10 + i % 7 for i in s], batch_size, random.Random(0), group)) for s in shards}
        assert len(counts) == 1, f"ranks would run different numbers of steps: {counts}"


def test_shard_refuses_an_empty_data_set():
    with pytest.raises(InputError, match="at least one example"):
        shard(0, 2, 0)


def test_processes_and_backend_are_validated_with_the_fix():
    assert TrainingConfig().processes == 1 and TrainingConfig().backend == "auto"
    with pytest.raises(InputError, match=r"training.processes must be >= 1 .*use 1 for in-process"):
        load_config(overrides=["data.path=x.csv", "training.processes=0"])
    with pytest.raises(InputError, match="training.backend"):
        load_config(overrides=["data.path=x.csv", "training.backend=mpi"])


def test_auto_picks_gloo_without_cuda_and_nccl_needs_a_gpu_per_process(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_backend("auto", 2) == "gloo" and resolve_backend("gloo", 2) == "gloo"
    with pytest.raises(InputError, match="one CUDA GPU per process.*training.backend=gloo"):
        resolve_backend("nccl", 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_backend("auto", 2) == "nccl"


def test_threads_are_shared_among_processes_unless_configured():
    assert threads_per_process(3, 2) == 3
    assert threads_per_process(None, 10_000) == 1


@pytest.mark.integration
def test_a_failing_rank_is_named_with_the_end_of_its_log(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("{not json", encoding="utf-8")
    with pytest.raises(DistributedTrainingFailed) as err:
        launch(spec, 2, threads=1, timeout_s=300)
    message = str(err.value)
    # both ranks fail on the bad spec, but under load torchrun may stop the slower one before it reports: every rank
    # that reported is named (at least one), each with the end of its log
    named = [r for r in ("0", "1") if f"rank {r} failed" in message]
    assert named, message
    assert message.count("JSONDecodeError: Expecting property name") >= len(named)
    assert message.count("last lines of its log") == len(named)


def _run(cli, tickets_csv, tiny_bert, *extra) -> int:
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", *FLOW, *extra]
    return cli(["run", "--config", str(config), *[a for s in sets for a in ("--set", s)]])


@pytest.mark.integration
def test_two_gloo_processes_register_the_same_adapter_format_and_tags_as_one(
        prefect_harness, home, cli, tickets_csv, tiny_bert, tickets, capsys, monkeypatch):
    from tasks.governance import approvals
    from tasks.governance import loader
    from tasks.governance import registry
    from tasks.core.names import ALL_TAGS, Tag

    name = "support-ticket-router"
    assert _run(cli, tickets_csv, tiny_bert, "training.max_steps=3") == 0, capsys.readouterr()
    code = _run(cli, tickets_csv, tiny_bert, "training.processes=2", "training.backend=gloo")
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    c = registry.client()
    single, multi = c.get_model_version(name, "1"), c.get_model_version(name, "2")

    def files(mv) -> set[str]:
        return {Path(a.path).name for a in c.list_artifacts(mv.run_id, "adapter")}

    assert files(multi) == files(single) and "adapter_model.safetensors" in files(multi)
    assert not [t for t in ALL_TAGS if not multi.tags.get(t)], "every tag is set"
    assert multi.tags[Tag.PEFT_TRAINABLE_PARAMS] == single.tags[Tag.PEFT_TRAINABLE_PARAMS]
    run = c.get_run(multi.run_id)
    assert {"train_loss", "val_loss", "val_macro_f1", "test_macro_f1", "train_seconds"} <= set(run.data.metrics)
    assert run.data.params["training.processes"] == "2"

    stats = json.loads(Path(c.download_artifacts(multi.run_id, "reports/distributed_training.json")).read_text())
    assert stats["world_size"] == 2 and stats["backend"] == "gloo"
    ranks = sorted(stats["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["steps"] == ranks[1]["steps"] == stats["steps"] > 0
    assert ranks[0]["examples"] == ranks[1]["examples"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"], "gradients were averaged: ranks stay identical"
    assert ranks[0]["real_tokens"] > 0 and ranks[1]["real_tokens"] > 0
    assert stats["real_tokens"] == ranks[0]["real_tokens"] + ranks[1]["real_tokens"]

    approvals.approve(name, "2", people_now()["reviewer"], "two-process adapter reviewed")
    report = loader.verify(f"{name}@champion")
    assert report.ok and report.version == "2", report.to_text()
    preds = loader.predict(f"{name}@champion", list(tickets["text"].head(3)))
    assert len(preds) == 3 and all(p["label"] in set(tickets["team"]) for p in preds)
