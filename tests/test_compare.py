"""The method comparison: the recommendation rule, per-method configs, and the whole compare flow on a tiny model."""

from __future__ import annotations

import csv
import io
import os
import socket

import pytest
from mlflow.tracking import MlflowClient

from tasks.core import state
from tasks.training.comparison import MethodResult, mark_pareto, peak_memory, recommend, to_csv, to_markdown
from tasks.core.config import Config
from tasks.core.config_files import load_config
from tasks.core.errors import InputError
from tasks.core.names import ApprovalStatus, Tag


def _r(method: str, f1: float, params: int, size: int, wall: float = 10.0) -> MethodResult:
    return MethodResult(method=method, run_id=f"run-{method}", test_primary=f1, test_accuracy=f1, trainable_params=params,
                        base_params=1_000_000, adapter_bytes=size, wall_seconds=wall, tokens_per_second=100.0,
                        peak_memory_mib=50.0, cost=wall / 3600 * 0.1, adapter_digest="d" * 64)


def test_recommendation_takes_the_smallest_adapter_among_methods_close_to_the_best():
    results = [_r("full", 0.90, 1_000_000, 4_000_000), _r("lora", 0.895, 10_000, 40_000),
               _r("ia3", 0.85, 1_000, 4_000), _r("prompt_tuning", 0.891, 8_000, 30_000)]
    rec = recommend(results, "macro_f1", tolerance=0.01, prefer="adapter_bytes")
    assert rec.method == "prompt_tuning"  # ia3 is smaller but 0.05 behind the best
    assert set(rec.eligible) == {"full", "lora", "prompt_tuning"}
    assert "within 0.01 of the best of those (0.9000)" in rec.rule and "smallest adapter bytes" in rec.rule
    assert recommend(results, "macro_f1", tolerance=0.0, prefer="adapter_bytes").method == "full"
    assert recommend(results, "macro_f1", tolerance=0.1, prefer="trainable_params").method == "ia3"


def test_only_methods_whose_gates_passed_are_recommended():
    """The best metric loses to a gate: full fine-tuning overfits (regression gate failed), so the recommendation is
    made among the others, and says why full was not eligible; with every method failing, nothing is recommended."""
    results = [_r("full", 0.95, 1_000_000, 4_000_000), _r("lora", 0.90, 10_000, 40_000),
               _r("ia3", 0.895, 1_000, 4_000)]
    results[0].gates = {"bias": "passed", "regression": "failed"}
    results[1].gates = {"bias": "passed", "regression": "passed"}
    results[2].gates = {"bias": "skipped", "regression": "passed"}  # no group column: skipped is no failure
    rec = recommend(results, "macro_f1", tolerance=0.01, prefer="adapter_bytes")
    assert rec.method == "ia3" and set(rec.eligible) == {"lora", "ia3"}
    assert "best of those (0.9000)" in rec.rule and "full (failed: regression)" in rec.reason
    for r in results:
        r.gates["regression"] = "failed"
    none = recommend(results, "macro_f1", tolerance=0.01, prefer="adapter_bytes")
    assert none.method is None and none.eligible == []
    md = to_markdown(results, none, "macro_f1", "USD", {"epochs": 1})
    assert "**None**: no method's candidate passed the gates" in md and "| failed: regression |" in md


def test_the_pareto_front_is_what_no_other_method_beats_in_both_metric_and_size():
    results = mark_pareto([_r("full", 0.95, 1_000_000, 4_000_000), _r("lora", 0.90, 10_000, 40_000),
                           _r("bottleneck", 0.88, 50_000, 200_000), _r("ia3", 0.80, 1_000, 4_000),
                           _r("dora", 0.90, 12_000, 50_000)])
    assert {r.method for r in results if r.pareto} == {"full", "lora", "ia3"}  # bottleneck, dora: lora beats both
    assert [r.method for r in mark_pareto(results, "wall_seconds") if r.pareto] == ["full"]  # equal times: best wins


def test_report_lists_every_method_and_states_the_rule():
    results = [_r("full", 0.9, 1_000_000, 4_000_000), _r("lora", 0.9, 10_000, 40_000)]
    rec = recommend(results, "macro_f1", 0.01, "adapter_bytes")
    md = to_markdown(results, rec, "macro_f1", "USD", {"epochs": 1})
    assert "| full |" in md and "| lora |" in md and "**lora**. Rule: among the methods" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(results))))
    assert [r["method"] for r in rows] == ["full", "lora"]
    assert float(rows[1]["trainable_fraction"]) == pytest.approx(0.01)


def test_method_configs_share_data_and_budget_and_take_their_own_method_and_learning_rate(tmp_path):
    from tasks.steps.compare import method_config

    base = Config(data={"path": "x.csv"}, peft={"r": 4, "alpha": 8, "target_modules": ["query", "key"]},
                  training={"epochs": 2, "learning_rate": 0.002})
    lora, dora, full, ia3, pf = (method_config(base, m) for m in ("lora", "dora", "full", "ia3", "pfeiffer"))
    assert lora.peft == base.peft and lora.training.learning_rate == 0.002
    assert dora.peft.use_dora and dora.peft.r == 4 and dora.peft.target_modules == ["query", "key"]
    assert full.peft.method == "full" and full.training.learning_rate == 5e-5
    assert ia3.peft.method == "ia3" and ia3.peft.target_modules == ["query", "key"]
    assert pf.peft.method == "bottleneck" and pf.peft.bottleneck == "pfeiffer"
    assert all(c.training.epochs == 2 and c.data == base.data for c in (lora, dora, full, ia3, pf))


def test_unknown_method_is_a_config_error_naming_the_choices(tmp_path):
    with pytest.raises(InputError, match="unknown method.*'lorra'.*choose from lora"):
        load_config(None, ["data.path=x.csv", "compare.methods=[lora,lorra]"])


def test_peak_memory_sees_what_the_block_allocates():
    import numpy as np

    with peak_memory() as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert mem["growth_mib"] > 48


@pytest.mark.integration
@pytest.mark.parametrize("runner", ["sequential", "dask"])
def test_compare_flow_child_runs_table_and_winner_through_the_gates(prefect_harness, home, tickets_csv, tiny_bert,
                                                                    cli, capsys, runner):
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "training.epochs=1", "training.max_steps=3",
            "training.batch_size=16", "gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point",
            "gates.regression.min_margin_over_baseline=-1.0", "gates.regression.max_overfit_gap=1.0",
            "gates.bias.min_disparate_impact_ratio=0", "gates.bias.max_equalized_odds_difference=1",
            "gates.bias.max_accuracy_gap=1", "gates.bias.max_counterfactual_flip_rate=1",
            "gates.bias.max_counterfactual_prob_change=1", f"compare.task_runner={runner}",
            "compare.tolerance=1.0", "compare.prefer=trainable_params"]
    methods = "lora,ia3,full" if runner == "sequential" else "lora,prompt_tuning"
    args = ["compare", "--config", "configs/tiny.yaml", "--methods", methods, "--json"]
    code = cli(args + [a for s in sets for a in ("--set", s)])
    out = capsys.readouterr().out
    assert code == 0, out  # thresholds no tiny model can miss: the winner passes the gates
    import json

    result = json.loads(out[out.index("{"):])
    c = MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())
    children = c.search_runs([c.get_experiment_by_name("adaptrail").experiment_id],
                             f"tags.mlflow.parentRunId = '{result['parent_run_id']}'")
    assert sorted(r.data.tags[Tag.PEFT_METHOD] for r in children) == sorted(methods.split(","))
    here = f"{socket.gethostname()}:{os.getpid()}"
    workers = {r.data.tags["adaptrail.compare.worker"] for r in children}
    assert workers == {here} if runner == "sequential" else here not in workers  # dask: in worker processes
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == set(methods.split(","))
    assert all(r["wall_seconds"] > 0 and r["tokens_per_second"] > 0 and r["adapter_bytes"] > 0 for r in rows.values())
    assert all(r["gates"] == {"bias": "passed", "regression": "passed"} for r in rows.values())  # every candidate
    assert any(r["pareto"] for r in rows.values())
    if "full" in rows:
        assert rows["full"]["trainable_params"] > 10 * rows["lora"]["trainable_params"] > 10 * rows["ia3"]["trainable_params"]
    # tolerance 1.0 + prefer trainable_params: the fewest trainable parameters wins
    assert result["recommended"] == min(rows.values(), key=lambda r: r["trainable_params"])["method"]
    arts = {a.path for a in c.list_artifacts(result["parent_run_id"], "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.csv", "comparison/comparison.png"} <= arts
    versions = c.search_model_versions("name='support-ticket-router'")
    assert len(versions) == 1
    tags = versions[0].tags
    assert tags[Tag.PEFT_METHOD] == result["recommended"]
    assert tags[Tag.ADAPTER_DIGEST] == rows[result["recommended"]]["adapter_digest"]
    assert tags[Tag.GATE_BIAS] == "passed" and tags[Tag.GATE_REGRESSION] == "passed"
    assert tags[Tag.APPROVAL_STATUS] == ApprovalStatus.PENDING
    assert versions[0].run_id == rows[result["recommended"]]["run_id"]


def test_a_comparison_where_every_candidate_fails_a_gate_registers_nothing(prefect_harness, home, tickets_csv,
                                                                         tiny_bert, cli, capsys):
    sets = [f"data.path={tickets_csv}", f"model.base={tiny_bert}", "training.epochs=1", "training.max_steps=2",
            "training.batch_size=16", "gates.bias.bootstrap_samples=0", "gates.bias.judge_on=point",
            "gates.regression.min_margin_over_baseline=1.0"]  # no model beats the baseline by 1.0 macro-F1
    code = cli(["compare", "--config", "configs/tiny.yaml", "--methods", "lora,ia3"]
               + [a for s in sets for a in ("--set", s)])
    captured = capsys.readouterr()
    assert code == 3, captured.out + captured.err
    assert "**None**: no method's candidate passed the gates" in captured.out
    assert "| failed: regression |" in captured.out.replace("failed: bias, regression", "failed: regression")
    assert "nothing registered" in captured.err
    c = MlflowClient(state.tracking_uri(), registry_uri=state.tracking_uri())
    assert c.search_model_versions("name='support-ticket-router'") == []
