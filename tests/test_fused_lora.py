"""training.fuse_lora: the merged-weight LoRA computation gives peft's outputs and gradients, is used only where that
is exact, and leaves the model as it found it."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification

from tasks.core.config import TrainingConfig
from tasks.training import fused_lora as fl
from tasks.training.loop import Encoded, train


def _model(seed: int = 0, **lora) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=32, num_labels=3)
    model = get_peft_model(BertForSequenceClassification(cfg), LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=["classifier"], **lora))
    with torch.no_grad():  # B starts at zero in peft; give it values so that dA is not zero either
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 60, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding, as in real batches
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def _forward_backward(model) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**_batch())
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _count_fused_calls(monkeypatch) -> list[int]:
    calls = [0]
    original = fl._MergedLoraLinear.apply

    def counted(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(fl._MergedLoraLinear, "apply", counted)
    return calls


def test_merged_computation_gives_peft_outputs_and_gradients(monkeypatch):
    model = _model().eval()  # no dropout: both computations see the same function
    calls = _count_fused_calls(monkeypatch)
    logits, grads = _forward_backward(model)
    with fl.fused_lora(model) as patched:
        fused_logits, fused_grads = _forward_backward(model)
    assert patched == 13  # q, k, v, o, intermediate, output in 2 layers + the pooler; not the classifier head
    assert calls[0] == patched  # every LoRA linear took the merged path once
    torch.testing.assert_close(fused_logits, logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == fused_grads.keys() and any("lora_A" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(fused_grads[name], grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("case", ["lora dropout", "dora", "bfloat16", "adapter disabled"])
def test_peft_forward_is_kept_where_merging_is_not_the_same_computation(monkeypatch, case):
    model = _model(lora_dropout=0.1 if case == "lora dropout" else 0.0, use_dora=case == "dora").eval()
    if case == "bfloat16":  # the delta s*B*A would round away when added to W in 8 bits of mantissa
        model = model.to(torch.bfloat16)
    calls = _count_fused_calls(monkeypatch)
    with fl.fused_lora(model):
        if case == "adapter disabled":
            with model.disable_adapter():
                model(**_batch())
        else:
            model(**_batch())
    assert calls[0] == 0


def test_patches_are_removed_after_training_and_after_an_error():
    model = _model()
    layers = fl.fusable_modules(model)
    with pytest.raises(RuntimeError), fl.fused_lora(model):
        assert all("forward" in m.__dict__ for m in layers)
        raise RuntimeError("training failed")
    assert not any("forward" in m.__dict__ for m in layers)
    with fl.fused_lora(model, enabled=False) as patched:
        assert patched == 0 and not any("forward" in m.__dict__ for m in layers)


def test_training_with_and_without_fusing_reaches_the_same_weights():
    g = torch.Generator().manual_seed(2)
    enc = Encoded([torch.randint(1, 60, (int(n),), generator=g).tolist() for n in torch.randint(3, 12, (48,), generator=g)],
                  torch.randint(0, 3, (48,), generator=g).tolist())
    weights = {}
    for fuse in (False, True):
        model = _model(seed=3)
        cfg = TrainingConfig(epochs=2, batch_size=8, learning_rate=1e-2, seed=5, fuse_lora=fuse, num_threads=1)
        stats = train(model, enc, Encoded([], []), 0, cfg)  # dropout on: the same seeded masks on both sides
        assert stats.steps == 12
        weights[fuse] = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    for name, w in weights[False].items():
        torch.testing.assert_close(weights[True][name], w, rtol=1e-3, atol=1e-5, msg=name)


def test_prediction_uses_the_merged_weight_and_gives_peft_logits(monkeypatch):
    from tasks.training.loop import predict_logits

    model = _model()
    batch = _batch()
    with torch.no_grad():
        expected = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ids = [row[:int(m.sum())].tolist() for row, m in zip(batch["input_ids"], batch["attention_mask"])]
    calls = _count_fused_calls(monkeypatch)
    got = predict_logits(model, Encoded(ids, [0] * len(ids)), pad_id=0, batch_size=2)
    assert calls[0] > 0  # the merged path ran
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-5)
    assert not any("forward" in m.__dict__ for m in model.modules())  # the model is left as peft built it
