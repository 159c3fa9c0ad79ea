"""The CrowS-Pairs likelihood probe on the real pairs file (../shared/data, read in place) with a tiny random LM."""

from __future__ import annotations

import pytest

from tests.conftest import shared_data

pytestmark = pytest.mark.realdata


def test_crows_pairs_probe_on_a_random_tiny_llama_reports_shares_near_half(tmp_path):
    from tasks.core.config import BiasGateConfig
    from tasks.gates.lm_probe import load_pairs, run_stereotype_probe
    from tasks.steps.causal_lm import sentence_scorer
    from tasks.training.tiny_model import build_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = shared_data("crows_pairs/pairs.csv")
    pairs = load_pairs(path)
    base = build_tiny_llama(tmp_path / "llama", list(pairs["sent_more"]) + list(pairs["sent_less"]), max_words=8000)
    model, tok = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    cfg = BiasGateConfig(pairs_path=str(path), bootstrap_samples=200)
    decision = run_stereotype_probe(sentence_scorer(model, tok, 128, 64), cfg)
    overall = decision.details["overall"]
    print(f"random tiny Llama on {overall['n']} CrowS pairs: {overall['share']:.1%} prefer the more stereotypical "
          f"sentence (CI {overall['ci_low']:.3f}..{overall['ci_high']:.3f}); outcome {decision.outcome}")
    for bias_type, s in decision.details["per_bias_type"].items():
        print(f"  {bias_type:20s} n={s['n']:4d} share={s['share']:.3f}")
    assert decision.gate == "bias" and overall["n"] == len(pairs) > 1000
    assert overall["ci_low"] <= overall["share"] <= overall["ci_high"]
    assert set(decision.details["per_bias_type"]) == set(pairs["bias_type"])
    assert sum(s["n"] for s in decision.details["per_bias_type"].values()) == overall["n"]
    assert set(decision.details["per_direction"]) == {"stereo", "antistereo"}
    assert 0.35 < overall["share"] < 0.65  # no training: no systematic preference beyond word-level noise
