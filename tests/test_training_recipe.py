"""The default recipe's mechanisms on a tiny random-init BERT: early stopping that keeps the best epoch, a
class-weighted loss on imbalanced data, the head at its own learning rate, LoRA on every linear layer."""

import pytest
import torch

from tasks.core.config import Config, ModelConfig, TrainingConfig
from tasks.core.peft_config import PeftConfig
from tasks.training.loop import encode, train
from tasks.training.model import load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft
from tasks.training.recipe import class_weights, param_groups

TEXTS = ["great service thanks", "love it works well", "broken again and slow", "terrible support never answered"]


@pytest.fixture(scope="module")
def base(tiny_bert):
    return resolve_base_model(ModelConfig(base=str(tiny_bert)))


def _lora(base, **peft):
    model, fresh = load_classifier(base, ModelConfig(base=base.path), ["neg", "pos"])
    return wrap_with_peft(model, PeftConfig(**peft), "sequence_classification", fresh)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_early_stopping_stops_after_patience_and_puts_the_best_epochs_weights_back(base):
    torch.manual_seed(0)
    model = _lora(base, r=2)
    tok = load_tokenizer(base, ModelConfig(base=base.path))
    enc = encode(tok, TEXTS * 4, [1, 1, 0, 0] * 4, 32)
    scores = iter([0.5, 0.9, 0.6, 0.7, 0.99])  # best at epoch 2, then two epochs without improvement
    seen: dict[int, dict[str, torch.Tensor]] = {}
    cfg = TrainingConfig(epochs=10, early_stopping_patience=2, batch_size=4, learning_rate=1e-2, seed=3)
    stats = train(model, enc, enc, tok.pad_token_id, cfg, on_epoch=lambda e, r: seen.update({e: _trainable(model)}),
                  validate=lambda m: {"val_macro_f1": next(scores)}, monitor=("val_macro_f1", True))
    assert [r["epoch"] for r in stats.history] == [1, 2, 3, 4]  # stopped: epoch 5 never ran
    assert stats.best_epoch == 2 and stats.steps == 16
    now = _trainable(model)
    assert all(torch.equal(now[n], seen[2][n]) for n in now)  # epoch 2's weights, not the last epoch's
    assert not all(torch.equal(now[n], seen[4][n]) for n in now)


def test_without_patience_or_a_lower_is_better_metric_the_rules_follow(base):
    tok = load_tokenizer(base, ModelConfig(base=base.path))
    enc = encode(tok, TEXTS, [1, 1, 0, 0], 32)
    off = TrainingConfig(epochs=3, early_stopping_patience=None, batch_size=4, seed=3)
    scores = iter([0.9, 0.1, 0.1])
    stats = train(_lora(base, r=2), enc, enc, tok.pad_token_id, off, validate=lambda m: {"val_macro_f1": next(scores)},
                  monitor=("val_macro_f1", True))
    assert len(stats.history) == 3 and stats.best_epoch == 3  # every epoch trained, the last one kept
    losses = iter([1.0, 0.5, 0.7, 0.4])  # lower is better: epoch 3 does not improve, epoch 4 does
    on = TrainingConfig(epochs=4, early_stopping_patience=2, batch_size=4, seed=3)
    stats = train(_lora(base, r=2), enc, enc, tok.pad_token_id, on, validate=lambda m: {"val_loss": next(losses)},
                  monitor=("val_loss", False))
    assert len(stats.history) == 4 and stats.best_epoch == 4


def test_class_weights_are_balanced_when_classes_are_imbalanced():
    imbalanced = [0] * 90 + [1] * 10
    assert class_weights(imbalanced, 2, "auto") == pytest.approx([100 / 180, 100 / 20])
    assert class_weights(imbalanced, 2, "none") is None
    assert class_weights([0] * 55 + [1] * 45, 2, "auto") is None  # within 1.5x: left unweighted
    assert class_weights([0] * 55 + [1] * 45, 2, "balanced") == pytest.approx([100 / 110, 100 / 90])
    assert class_weights([0] * 10 + [2] * 10, 3, "balanced")[1] == 0.0  # a class absent from training


def test_the_weighted_loss_is_what_training_minimises(tiny_bert, tickets):
    """On an imbalanced split the auto recipe trains on the balanced loss, not the model's unweighted one."""
    from tasks.training.recipe import TASK_KINDS, TrainingJob

    frame = tickets.rename(columns={"team": "label"})[["text", "label"]]
    labels = sorted(frame["label"].unique())
    skewed = frame[frame["label"] == labels[0]].head(100)._append(frame[frame["label"] != labels[0]].head(20))
    cfg = Config(data={"path": "x.csv"}, model={"base": str(tiny_bert)})
    job = TrainingJob(cfg, resolve_base_model(cfg.model), labels, "d" * 64)
    kind = TASK_KINDS["sequence_classification"]
    index = {label: i for i, label in enumerate(labels)}
    loss_fn = kind.loss(job, encode(load_tokenizer(job.base, cfg.model), list(skewed["text"]),
                                    [index[y] for y in skewed["label"]], 32))
    assert loss_fn is not None
    logits = torch.zeros(2, len(labels))
    logits[:, 0] = 2.0  # predicts the majority class
    out = type("Out", (), {"logits": logits})()
    minority = torch.tensor([1, 1])
    plain = torch.nn.functional.cross_entropy(logits, minority)
    assert float(loss_fn(out, minority)) == pytest.approx(float(plain))  # one class: weights cancel in the mean
    mixed = torch.tensor([0, 1])
    assert float(loss_fn(out, mixed)) > float(torch.nn.functional.cross_entropy(logits, mixed))
    balanced = cfg.model_copy(update={"training": cfg.training.model_copy(update={"class_weights": "none"})})
    assert kind.loss(TrainingJob(balanced, job.base, labels, "d" * 64), encode(
        load_tokenizer(job.base, cfg.model), ["a"], [0], 8)) is None


def test_the_head_trains_at_its_own_learning_rate(base):
    model = _lora(base, r=2)
    assert param_groups(model, ["classifier"], TrainingConfig()) is None  # one group at learning_rate
    groups = param_groups(model, ["classifier"], TrainingConfig(learning_rate=1e-3, head_learning_rate=1e-2))
    assert [g.get("lr") for g in groups] == [None, 1e-2]
    head = {id(p) for p in groups[1]["params"]}
    names = [n for n, p in model.named_parameters() if id(p) in head]
    assert names and all(".classifier.modules_to_save." in n for n in names)
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_all_linear_puts_lora_on_every_linear_layer_but_the_head(base):
    model = _lora(base, r=2, target_modules=["all-linear"])
    adapted = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
    assert {"query", "key", "value", "dense"} <= adapted and "classifier" not in adapted


def test_prompt_tuning_starts_from_vocabulary_embeddings(base):
    model, fresh = load_classifier(base, ModelConfig(base=base.path), ["neg", "pos"])
    vocab = model.get_input_embeddings().weight.detach().clone()
    tuned = wrap_with_peft(model, PeftConfig(method="prompt_tuning", num_virtual_tokens=4),
                           "sequence_classification", fresh)
    prompt = tuned.prompt_encoder["default"].embedding.weight.detach()
    assert all(any(torch.equal(row, v) for v in vocab) for row in prompt)  # each virtual token: a real token's


def test_gradients_are_clipped_before_every_step(base):
    """training.max_grad_norm (1.0 by default, as in Hugging Face's Trainer): no step sees a larger gradient norm."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    tok = load_tokenizer(base, ModelConfig(base=base.path))
    enc = encode(tok, TEXTS * 4, [1, 1, 0, 0] * 4, 32)
    norms: list[float] = []

    def seen(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    handle = register_optimizer_step_pre_hook(seen)
    try:
        train(_lora(base, r=2), enc, enc, tok.pad_token_id, TrainingConfig(epochs=1, batch_size=4, max_grad_norm=0.01,
                                                                          learning_rate=1e-2))
        clipped = list(norms)
        norms.clear()
        train(_lora(base, r=2), enc, enc, tok.pad_token_id, TrainingConfig(epochs=1, batch_size=4,
                                                                          max_grad_norm=None, learning_rate=1e-2))
    finally:
        handle.remove()
    assert len(clipped) == 4 and max(clipped) <= 0.01 + 1e-6
    assert max(norms) > 0.01  # without clipping the same steps are larger
