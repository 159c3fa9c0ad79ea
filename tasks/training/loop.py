"""Train an adapter on a frozen base: seeded, length-grouped batches with dynamic padding, AdamW + linear warmup,
early stopping on a validation metric with the best epoch's weights kept."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from tasks.core.config import TrainingConfig
from tasks.core.errors import InputError
from tasks.training.fused_lora import fused_lora

log = logging.getLogger("adaptrail")

EpochCallback = Callable[[int, dict[str, float]], None]
StepCallback = Callable[[int, float], None]  # (optimizer step, mean training loss since the last call)
Collate = Callable[[Any, list[int], int], dict[str, torch.Tensor]]  # (encoded, batch indices, pad id) -> inputs
Validate = Callable[[Any], dict[str, float]]  # model -> validation metrics (e.g. val_loss), after each epoch
Monitor = tuple[str, bool]  # (the validation metric early stopping watches, whether higher is better)
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]  # (model outputs, labels) -> loss, where not the model's own


@dataclass
class Encoded:
    """Token ids per example (unpadded) and integer labels."""

    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


@dataclass
class TrainStats:
    epochs: int
    steps: int
    seconds: float
    real_tokens: int  # non-padding tokens seen in training
    padded_tokens: int  # tokens including padding
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # the epoch whose weights were kept (the last one without early stopping)

    @property
    def tokens_per_second(self) -> float:
        return self.real_tokens / self.seconds if self.seconds else 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode(tokenizer, texts: list[str], labels: list[int], max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]
    return Encoded(input_ids=ids, labels=list(labels))


def make_batches(lengths: list[int], batch_size: int, rng: random.Random, group_by_length: bool) -> list[list[int]]:
    """Shuffled batches; with length grouping, examples of similar length share a batch (little padding)."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if group_by_length:
        mega = batch_size * 50
        idx = [i for k in range(0, len(idx), mega)
               for i in sorted(idx[k:k + mega], key=lambda j: lengths[j], reverse=True)]
    batches = [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(enc: Encoded, batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest example of this batch only."""
    width = max(len(enc.input_ids[i]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):
        seq = enc.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([enc.labels[i] for i in batch])}


def length_sorted_batches(enc: Encoded, pad_id: int, batch_size: int) -> Iterator[tuple[list[int], dict]]:
    """(row indices, padded inputs without labels) for inference, in batches of similar length (little padding)."""
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        inputs = collate(enc, batch, pad_id)
        inputs.pop("labels")
        yield batch, inputs


@torch.inference_mode()
def predict_logits(model, enc: Encoded, pad_id: int, batch_size: int, device: torch.device | None = None
                   ) -> np.ndarray:
    """Logits in input order; batches sorted by length so padding stays small; inputs moved to ``device`` if given.
    LoRA linears compute through their merged weight where that is exact (:mod:`tasks.training.fused_lora`: the
    same logits up to float rounding, 1.34-1.44x the texts/s of peft's forward on a 2-core CPU)."""
    model.eval()
    out = np.zeros((len(enc), model.config.num_labels), dtype=np.float32)
    with fused_lora(model):
        for batch, inputs in length_sorted_batches(enc, pad_id, batch_size):
            if device is not None:
                inputs = {n: t.to(device) for n, t in inputs.items()}
            out[batch] = model(**inputs).logits.float().cpu().numpy()
    return out


def predict_proba(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128) -> np.ndarray:
    """Class probabilities for raw texts, in the model's label order."""
    enc = encode(tokenizer, texts, [0] * len(texts), max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return softmax(predict_logits(model, enc, pad, batch_size))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def release_freed_memory() -> None:
    """Serve large allocations from mmap, so every freed activation goes back to the OS (glibc only).

    Batches of varying shape otherwise fragment the heap and the process keeps the high-water mark of every
    shape it has seen. The price is speed, as fresh pages are faulted in for each large tensor: on MiniLM over 600
    SMS texts `bench/train_speed.py` measured 0.70x the peak RSS at 0.84x the tokens/s (``+keep`` mode = off).
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def enable_gradient_checkpointing(model) -> None:
    """Recompute each layer's activations in backward (non-reentrant, so frozen inputs need no grad hook)."""
    target = model  # a peft model forwards these attributes to the transformers model it wraps
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise InputError(f"{type(target).__name__} does not support gradient checkpointing; set "
                         "training.gradient_checkpointing: false")
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def linear_warmup(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero."""
    warmup = int(total_steps * warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )


def train(model, train_enc: Encoded, val_enc: Encoded, pad_id: int, cfg: TrainingConfig,
          on_epoch: EpochCallback | None = None, *, collate_fn: Collate = collate, validate: Validate | None = None,
          monitor: Monitor | None = None, param_groups: list[dict[str, Any]] | None = None,
          loss_fn: LossFn | None = None, on_step: StepCallback | None = None) -> TrainStats:
    """Optimise the trainable (adapter) parameters; report loss and ``validate(model)`` after each epoch.

    ``collate_fn`` turns a batch into model inputs with ``labels`` (the task kind's, on the training device). With a
    ``monitor`` and ``cfg.early_stopping_patience``, training stops once the monitored validation metric has not
    improved for that many epochs, and the weights of its best epoch are put back. ``param_groups`` (AdamW groups,
    e.g. the head at its own learning rate) default to every trainable parameter at ``cfg.learning_rate``;
    ``loss_fn`` replaces the model's own loss (e.g. class-weighted cross-entropy). ``on_step`` receives the mean
    training loss every ``cfg.progress_seconds`` (step-level loss curves, e.g. to MLflow).
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.release_memory:
        release_freed_memory()
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    seed_everything(cfg.seed)
    rng = random.Random(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("the model has no trainable parameters; the adapter was not attached")
    optimizer = torch.optim.AdamW(param_groups or params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total_steps = min(cfg.max_steps or steps_per_epoch * cfg.epochs, steps_per_epoch * cfg.epochs)
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = linear_warmup(optimizer, total_steps, cfg.warmup_ratio)
    stats = TrainStats(epochs=epochs, steps=0, seconds=0.0, real_tokens=0, padded_tokens=0)
    stopper = (_EarlyStopping(model, monitor, cfg.early_stopping_patience)
               if validate is not None and monitor is not None and cfg.early_stopping_patience else None)
    with fused_lora(model, cfg.fuse_lora) as fused:
        if fused:
            log.info("training %d LoRA layers through their merged weight (training.fuse_lora)", fused)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            batches = make_batches(train_enc.lengths, cfg.batch_size, rng, cfg.group_by_length)
            losses = _epoch(model, train_enc, batches, pad_id, collate_fn, optimizer, scheduler, stats, total_steps,
                            f"epoch {epoch}/{epochs}", cfg.progress_seconds, loss_fn, on_step, cfg.max_grad_norm)
            stats.seconds += time.perf_counter() - start
            record = {"epoch": float(epoch), "train_loss": float(np.mean(losses)) if losses else float("nan")}
            if validate is not None and len(val_enc):
                record.update(validate(model))
            stats.history.append(record)
            stats.best_epoch = epoch
            log.info("epoch %d/%d %s", epoch, epochs,
                     ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
            if on_epoch is not None:
                on_epoch(epoch, record)
            if stopper is not None and stopper.update(epoch, record) and epoch < epochs:
                log.info("early stopping: %s has not improved for %d epochs; keeping epoch %d", monitor[0],
                         epoch - stopper.best_epoch, stopper.best_epoch)
                break
    if stopper is not None:
        stats.best_epoch = stopper.restore(stats.best_epoch)
    return stats


class _EarlyStopping:
    """Remembers the trainable weights of the best epoch so far; says when to stop; puts the best weights back.

    Under torchrun only rank 0 validates: its decision (improved, stop) is broadcast so that every rank keeps the
    same epoch and stops at the same time (their weights are identical under DDP).
    """

    def __init__(self, model, monitor: Monitor, patience: int):
        self.model, (self.key, self.higher), self.patience = model, monitor, patience
        self.best: float | None = None
        self.best_epoch = 0
        self.saved: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, record: dict[str, float]) -> bool:
        """Note this epoch's metric; True when training should stop."""
        value = record.get(self.key)
        improved = value is not None and not math.isnan(value) and (
            self.best is None or (value > self.best if self.higher else value < self.best))
        if improved:
            self.best = value
        decision = torch.tensor([int(improved)], dtype=torch.long)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(decision, src=0)
        if bool(decision.item()):
            self.best_epoch = epoch
            self.saved = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        return epoch - self.best_epoch >= self.patience

    @torch.no_grad()
    def restore(self, last_epoch: int) -> int:
        """Put the best epoch's weights back (nothing to do when it was the last); returns the epoch kept."""
        if not self.saved or self.best_epoch == last_epoch:
            return last_epoch
        for n, p in self.model.named_parameters():
            if n in self.saved:
                p.copy_(self.saved[n])
        return self.best_epoch


def _epoch(model, enc, batches: list[list[int]], pad_id: int, collate_fn: Collate, optimizer, scheduler,
           stats: TrainStats, total_steps: int, desc: str, progress_seconds: int = 30,
           loss_fn: LossFn | None = None, on_step: StepCallback | None = None,
           max_grad_norm: float | None = None) -> list[float]:
    """One pass over ``batches`` (stopping at ``total_steps``); counts steps and tokens into ``stats``. A progress
    bar on a terminal; otherwise a log line every ``progress_seconds``; ``on_step`` as often, either way."""
    model.train()
    losses: list[float] = []
    bar = tqdm(batches, desc=desc, leave=False, mininterval=2.0, disable=None)
    progress = _Progress(desc, total_steps, stats, progress_seconds, enabled=bar.disable, on_step=on_step)
    for batch in bar:
        if stats.steps >= total_steps:
            break
        inputs = collate_fn(enc, batch, pad_id)
        if loss_fn is None:
            loss = model(**inputs).loss
        else:
            labels = inputs.pop("labels")
            loss = loss_fn(model(**inputs), labels)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stats.steps += 1
        stats.real_tokens += int(inputs["attention_mask"].sum())
        stats.padded_tokens += inputs["attention_mask"].numel()
        losses.append(loss.detach().item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        progress.step(losses[-1])
    return losses


class _Progress:
    """Every ``every`` seconds: where no bar is shown, one line with step, loss, real tokens/s and time left; and the
    mean loss since the last time to ``on_step``, bar or not."""

    def __init__(self, desc: str, total_steps: int, stats: TrainStats, every: int, enabled: bool,
                 on_step: StepCallback | None = None):
        self.desc, self.total, self.stats, self.every, self.enabled = desc, total_steps, stats, every, enabled
        self.on_step = on_step
        self.start = self.last = time.perf_counter()
        self.steps0, self.tokens0 = stats.steps, stats.real_tokens
        self.losses: list[float] = []

    def step(self, loss: float) -> None:
        self.losses.append(loss)
        if not (self.enabled or self.on_step):
            return
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        if self.on_step is not None:
            self.on_step(self.stats.steps, float(np.mean(self.losses)))
        self.losses = []
        if not self.enabled:
            return
        done, spent = self.stats.steps - self.steps0, now - self.start
        left = (self.total - self.stats.steps) * spent / max(1, done)
        log.info("%s step %d/%d loss=%.4f %.0f tokens/s, about %dm%02ds left (all epochs)", self.desc,
                 self.stats.steps, self.total, loss, (self.stats.real_tokens - self.tokens0) / max(spent, 1e-9),
                 left // 60, left % 60)
