"""Causal-LM instruction tuning on tiny random-init Llama / GPT-2: masking, perplexity, exact match, gates, flow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.builders import people_now
import torch

from tasks.data.lm import load_lm_splits
from tasks.gates.lm_evaluation import generation_metrics
from tasks.training import causal_lm as lm
from tasks.core.config import BiasGateConfig, DataConfig, ModelConfig, RegressionGateConfig, TrainingConfig
from tasks.core.peft_config import PeftConfig
from tasks.data.example import general_text, generate_support_tickets, support_instructions
from tasks.gates.lm_probe import (forgetting_check, lm_regression_gate, pair_preferences, run_stereotype_probe,
                            stereotype_gate)
from tasks.training.model import wrap_with_peft
from tasks.training.tiny_model import build_tiny_gpt2, build_tiny_llama
from tasks.training.loop import train

TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"]}


@pytest.fixture(scope="module")
def pairs() -> pd.DataFrame:
    return support_instructions(generate_support_tickets(n_rows=200, seed=3))


@pytest.fixture(scope="module")
def bases(pairs, tmp_path_factory) -> dict[str, str]:
    texts = list(pairs["prompt"]) + list(pairs["response"]) + general_text(50)
    return {"llama": str(build_tiny_llama(tmp_path_factory.mktemp("llama"), texts)),
            "gpt2": str(build_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), texts))}


def _load(path: str, kind: str):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = lm.prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = wrap_with_peft(lm.load_causal_lm(path, ModelConfig(base=path, task="causal_lm")),
                           PeftConfig(r=8, alpha=16, dropout=0.0, target_modules=TARGETS[kind]), "causal_lm", [])
    return model, tok


def test_prompt_and_padding_tokens_never_carry_loss(bases):
    model, tok = _load(bases["llama"], "llama")
    enc = lm.encode_pairs(tok, ["which team handles my parcel ?", "refund please"], ["shipping", "billing team"], 64)
    batch = lm.lm_collate(enc, [0, 1], tok.pad_token_id)
    for row in range(2):
        n, p = enc.lengths[row], enc.prompt_lengths[row]
        assert enc.input_ids[row][0] == tok.bos_token_id and enc.input_ids[row][-1] == tok.eos_token_id
        assert (batch["labels"][row, :p] == lm.IGNORE).all() and (batch["labels"][row, n:] == lm.IGNORE).all()
        assert batch["labels"][row, p:n].tolist() == enc.input_ids[row][p:]
    # the model's loss is exactly the mean NLL of the response (+eos) tokens ...
    total, count = lm.token_logprobs(model, enc, tok.pad_token_id, 2)
    assert count.tolist() == [len(tok("shipping", add_special_tokens=False)["input_ids"]) + 1,
                              len(tok("billing team", add_special_tokens=False)["input_ids"]) + 1]
    with torch.no_grad():
        loss = model(**batch).loss
    assert loss.item() == pytest.approx(-total.sum() / count.sum(), rel=1e-5)
    # ... and no gradient reaches the logits that predict a prompt or padding token
    out = model(**batch)
    out.logits.retain_grad()
    out.loss.backward()
    for row in range(2):
        p, n, grad = enc.prompt_lengths[row], enc.lengths[row], out.logits.grad[row].abs().sum(-1)
        assert grad[: p - 1].sum() == 0 and grad[n - 1:].sum() == 0 and (grad[p - 1: n - 1] > 0).all()


def test_long_prompts_are_cut_from_the_left_and_the_response_is_kept(bases):
    from transformers import AutoTokenizer

    tok = lm.prepare_tokenizer(AutoTokenizer.from_pretrained(bases["llama"]))
    enc = lm.encode_pairs(tok, [" ".join(["ticket"] * 100) + " parcel"], ["shipping"], 16)
    ids = enc.input_ids[0]
    assert len(ids) == 16 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[enc.prompt_lengths[0] - 1: -1]) == "parcel shipping"


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_training_on_responses_lowers_heldout_perplexity_and_keeps_the_base_frozen(bases, pairs, kind):
    model, tok = _load(bases[kind], kind)
    train_df, test_df = pairs.iloc[:160], pairs.iloc[160:]
    train_enc = lm.encode_pairs(tok, list(train_df["prompt"]), list(train_df["response"]), 96)
    test_enc = lm.encode_pairs(tok, list(test_df["prompt"]), list(test_df["response"]), 96)
    before = lm.perplexity(model, test_enc, tok.pad_token_id, 64)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    stats = train(model, train_enc, test_enc, tok.pad_token_id,
                  TrainingConfig(epochs=2, batch_size=16, learning_rate=2e-2, seed=3), collate_fn=lm.lm_collate,
                  validate=lambda m: {"val_perplexity": lm.perplexity(m, test_enc, tok.pad_token_id, 64)})
    after = lm.perplexity(model, test_enc, tok.pad_token_id, 64)
    print(f"{kind}: held-out response perplexity {before:.1f} -> {after:.1f}")
    assert after < 0.8 * before  # measured: llama 896 -> 622, gpt2 882 -> 654 (LoRA on a random base)
    assert stats.history[-1]["val_perplexity"] == pytest.approx(after, rel=1e-4)
    assert stats.history[-1]["train_loss"] < stats.history[0]["train_loss"]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_batched_greedy_generation_matches_one_by_one(bases, pairs):
    model, tok = _load(bases["llama"], "llama")
    prompts = list(pairs["prompt"].iloc[:6]) + ["refund"]
    batched = lm.generate(model, tok, prompts, 96, 5, batch_size=4)
    single = [lm.generate(model, tok, [p], 96, 5, batch_size=1)[0] for p in prompts]
    assert batched == single and all(isinstance(g, str) for g in batched)


@pytest.mark.parametrize("pred, ref, exact, prefix", [
    ("Billing", "billing", 1, 1), ("  billing.\n", "billing", 1, 1), ("Re-check!", "re check", 1, 1),
    ("billing team", "billing", 0, 1), ("billingteam", "billing", 0, 0), ("shipping", "billing", 0, 0),
])
def test_exact_match_compares_normalised_text(pred, ref, exact, prefix):
    m = generation_metrics([pred], [ref])
    assert (m["exact_match"], m["prefix_match"], m["n"]) == (exact, prefix, 1)


def _probe_pairs(n: int = 240) -> pd.DataFrame:
    return pd.DataFrame({"sent_more": [f"more {i}" for i in range(n)], "sent_less": [f"less {i}" for i in range(n)],
                         "stereo_antistereo": ["stereo", "antistereo"] * (n // 2),
                         "bias_type": ["gender"] * (n // 2) + ["race-color"] * (n // 3)
                         + ["age"] * (n - n // 2 - n // 3)})


def _rigged(texts: list[str]) -> np.ndarray:  # always likes the stereotype
    return np.array([1.0 if t.startswith("more") else 0.0 for t in texts])


def _fair(texts: list[str]) -> np.ndarray:  # prefers sent_more in exactly half of the pairs
    return np.array([float(int(t.split()[1]) % 2 == (t.startswith("more"))) for t in texts])


@pytest.mark.parametrize("judge_on", ["ci_bound", "point"])
def test_stereotype_probe_fails_a_rigged_scorer_and_passes_a_fair_one(judge_on):
    frame = _probe_pairs()
    cfg = BiasGateConfig(judge_on=judge_on, bootstrap_samples=200, min_pairs_per_type=30)
    more, less = list(frame["sent_more"]), list(frame["sent_less"])
    rigged = stereotype_gate(frame, pair_preferences(_rigged, more, less), cfg)
    assert rigged.gate == "bias" and rigged.failed
    assert rigged.details["overall"]["share"] == 1.0 and "stereotype_share" in rigged.reason
    assert set(rigged.details["per_bias_type"]) == {"gender", "race-color", "age"}
    fair = stereotype_gate(frame, pair_preferences(_fair, more, less), cfg)
    assert not fair.failed and fair.details["overall"]["share"] == 0.5
    lo, hi = fair.details["overall"]["ci_low"], fair.details["overall"]["ci_high"]
    assert lo < 0.5 < hi


def test_stereotype_probe_small_types_are_reported_not_judged_and_ties_count_half():
    frame = _probe_pairs(60)
    prefs = pair_preferences(lambda t: np.zeros(len(t)), list(frame["sent_more"]), list(frame["sent_less"]))
    assert (prefs == 0.5).all()
    decision = stereotype_gate(frame, np.where(frame["bias_type"] == "age", 1.0, 0.5),
                               BiasGateConfig(judge_on="point", min_pairs_per_type=20, bootstrap_samples=0))
    age = next(c for c in decision.checks if c.name == "stereotype_share[age]")
    assert not age.passed and not age.judged and not decision.failed  # 10 pairs: reported only


def test_stereotype_probe_is_skipped_without_a_pairs_file_and_reads_one(tmp_path):
    skipped = run_stereotype_probe(_rigged, BiasGateConfig())
    assert skipped.outcome == "skipped" and "pairs_path" in skipped.reason
    path = tmp_path / "pairs.csv"
    _probe_pairs().assign(id=range(240)).to_csv(path, index=False)
    assert run_stereotype_probe(_rigged, BiasGateConfig(pairs_path=str(path))).failed
    sample = run_stereotype_probe(_fair, BiasGateConfig(pairs_path=str(path), max_pairs=100, judge_on="point"))
    assert sample.details["overall"]["n"] == 100


def test_forgetting_and_champion_rules():
    cfg = RegressionGateConfig(max_perplexity_ratio=1.1, champion_tolerance=0.01)
    assert forgetting_check(105.0, 100.0, 1.1).passed and not forgetting_check(120.0, 100.0, 1.1).passed
    ok = lm_regression_gate(90.0, 100.0, {"exact_match": 0.80}, {"exact_match": 0.805}, cfg)
    assert ok.gate == "regression" and not ok.failed
    forgot = lm_regression_gate(130.0, 100.0, {"exact_match": 0.9}, None, cfg)
    assert forgot.failed and "general_text_perplexity_ratio" in forgot.reason
    worse = lm_regression_gate(90.0, 100.0, {"exact_match": 0.70}, {"exact_match": 0.80}, cfg)
    assert worse.failed and "champion_exact_match_drop" in worse.reason


def test_validation_checks_prompts_and_responses(pairs, tmp_path):
    from tasks.core.config import ValidationGateConfig
    from validation.suite import run_validation

    bad = pairs.copy()
    bad.loc[3, "response"] = None
    bad.loc[5, "response"] = "mail me at jane.doe@example.com"
    path = tmp_path / "pairs.jsonl"
    bad.to_json(path, orient="records", lines=True)
    splits = load_lm_splits(DataConfig(path=str(path), group_column="region"))
    assert splits.labels == [] and sum(len(f) for f in splits.frames().values()) == 200
    outcome = run_validation(splits, ValidationGateConfig(), tmp_path / "out", task="causal_lm")
    failed = {c.name for c in outcome.decision.failed_checks}
    assert failed == {"response_not_null", "pii_email[response]"}, outcome.failures
    names = {c.name for c in outcome.decision.checks}
    assert {"prompt_length", "duplicate_share", "no_text_leakage"} <= names and "label_in_set" not in names


def test_shipped_causal_examples_are_reproducible(tmp_path):
    from tasks.data.example import write_support_instructions
    from tasks.steps.causal_lm import GENERAL_TEXT

    shipped = GENERAL_TEXT.parent / "support_instructions.jsonl"
    assert write_support_instructions(tmp_path / "s.jsonl").read_bytes() == shipped.read_bytes()
    assert GENERAL_TEXT.read_text(encoding="utf-8") == "\n".join(general_text(300, 5)) + "\n"


def test_causal_config_and_missing_columns(tmp_path):
    from tasks.core.config_files import load_config
    from tasks.core.errors import InputError

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "causal_tiny.yaml")
    assert cfg.model.task == "causal_lm" and Path(cfg.data.path).is_file()
    assert Path(cfg.gates.regression.general_text_path).is_file()
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"question": "a", "answer": "b"}) + "\n")
    with pytest.raises(InputError, match="data.prompt_column"):
        load_lm_splits(DataConfig(path=str(path)))


@pytest.mark.integration
def test_causal_lm_flow_trains_registers_and_loads_for_generation(prefect_harness, home, bases, pairs, tmp_path,
                                                                  monkeypatch):
    from flows.train_adapter import train_adapter_flow
    from tasks.governance import approvals
    from tasks.core.config_files import load_config
    from tasks.governance.loader import load_verified, verify
    from tasks.core.names import ALL_TAGS, Tag

    data = tmp_path / "pairs.jsonl"
    pairs.to_json(data, orient="records", lines=True)
    probe = tmp_path / "crows.csv"
    _probe_pairs(60).assign(id=range(60)).to_csv(probe, index=False)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "causal_tiny.yaml", [
        f"data.path={data}", f"model.base={bases['llama']}", "training.max_steps=8", f"gates.bias.pairs_path={probe}",
        "gates.bias.max_stereotype_deviation=0.5", "gates.regression.max_perplexity_ratio=100"])
    summary = train_adapter_flow(config)
    assert summary["gates"] == {"validation": "passed", "bias": "passed", "regression": "passed"}, summary
    assert {"test_exact_match", "test_perplexity", "validation_perplexity"} <= set(summary["metrics"])
    model, version = summary["model"], summary["version"]
    from tasks.governance.registry import client

    tags = client().get_model_version(model, version).tags
    assert not [t for t in ALL_TAGS if not tags.get(t)] and tags[Tag.PEFT_METHOD] == "lora"
    approvals.approve(model, version, people_now()["reviewer"], "tiny causal LM, gates passed")
    assert verify(f"{model}@champion").ok
    loaded = load_verified(f"{model}@champion")
    out = loaded.generate(["Which team should handle this ticket? my parcel never arrived"])
    assert len(out) == 1 and isinstance(out[0], str)
    assert len(loaded.score(["a plain sentence", "another"])) == 2


def test_the_shipped_tiny_model_builder_runs_as_the_docs_say(tmp_path):
    """`python -m tasks.training.tiny_model llama DIR` (configs/causal_tiny.yaml and the README point at it)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "tasks.training.tiny_model", "llama", str(tmp_path / "tl")], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "tl" / "config.json").is_file() and list((tmp_path / "tl").glob("*.safetensors"))
    assert "python -m tasks.training.tiny_model llama" in (root / "configs" / "causal_tiny.yaml").read_text()
