"""The one training path: build the adapter model, train it, save only what was trained, and describe it.

Every trainer goes through :func:`train_adapter`: the main flow for each task kind, the method comparison and
each torchrun rank (with a :class:`Parallel` wrapper); :func:`load_trained` rebuilds the same description from
saved adapter files (after torchrun, or for the comparison's winner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import pandas as pd
import torch

from tasks.core.config import Config, TrainingConfig
from tasks.core.metrics import classification_metrics
from tasks.data.lm import PROMPT, RESPONSE
from tasks.data.splits import LABEL, TEXT
from tasks.training import causal_lm as lm
from tasks.training.adapter_files import dir_size, read_metadata, save_adapter
from tasks.training.loop import (Collate, EpochCallback, Encoded, LossFn, Monitor, StepCallback, TrainStats,
                                 Validate, collate, encode, predict_logits, predict_proba, seed_everything, train)
from tasks.training.methods import head_modules, load_weights
from tasks.training.model import BaseModelRef, count_parameters, load_classifier, load_tokenizer, wrap_with_peft


@dataclass(frozen=True)
class TrainingJob:
    """What to train on what: the resolved config, the pinned base, the labels ([] for causal LM), the data digest."""

    config: Config
    base: BaseModelRef
    labels: list[str]
    dataset_digest: str

    @property
    def task(self) -> str:
        return self.config.model.task

    def metadata(self) -> dict[str, Any]:
        """``adaptrail.json`` of the adapter: what a loader needs to rebuild it (task, labels, method, base)."""
        cfg = self.config
        meta = {"task": self.task, "labels": list(self.labels), "max_length": cfg.model.max_length,
                "peft": cfg.peft.model_dump(mode="json"), "base_model": self.base.to_dict(),
                "dataset_digest": self.dataset_digest, "trust_remote_code": cfg.model.trust_remote_code,
                "training": cfg.training.model_dump(mode="json")}
        if self.task == "causal_lm":
            meta["max_new_tokens"] = cfg.model.max_new_tokens
        return meta


@dataclass
class TrainedAdapter:
    """A trained adapter on its base, with the files saved for it (``digest`` is '' where nothing was saved)."""

    model: Any
    tokenizer: Any
    adapter_dir: Path | None
    digest: str
    size_bytes: int
    trainable_params: int
    total_params: int
    stats: TrainStats
    max_length: int
    batch_size: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params

    def predict(self, texts: list[str]) -> np.ndarray:
        """Class probabilities for raw texts (the bias gate's counterfactual test and the golden set use it)."""
        return predict_proba(self.model, self.tokenizer, texts, self.max_length, self.batch_size)


@dataclass
class Built:
    """The base with its method attached, ready to train."""

    model: Any
    tokenizer: Any
    pad_id: int
    trainable: int
    total: int
    head: list[str]  # modules trained in full next to the adapter (the fresh classification head)


@dataclass(frozen=True)
class Parallel:
    """How a torchrun rank trains: the model wrapped (DDP) on its device; only the writer saves the adapter."""

    wrap: Callable[[Any], Any]
    device: torch.device
    writer: bool


class TaskKind(Protocol):
    """What differs between task kinds in training: model, tokenizer, encoding, batches, validation."""

    def tokenizer(self, job: TrainingJob) -> Any: ...

    def base_model(self, job: TrainingJob) -> tuple[Any, list[str]]: ...

    def encode(self, tokenizer: Any, frame: pd.DataFrame, job: TrainingJob) -> Any: ...

    collate: Collate
    monitor: Monitor  # what early stopping watches in the validator's record

    def validator(self, job: TrainingJob, built: Built, val: Any, device: torch.device | None) -> Validate: ...

    def loss(self, job: TrainingJob, train: Any) -> LossFn | None: ...


class Classification:
    """sequence_classification: text -> label, a fresh head trained with the adapter."""

    collate: Collate = staticmethod(collate)
    monitor: Monitor = ("val_macro_f1", True)

    def tokenizer(self, job: TrainingJob) -> Any:
        return load_tokenizer(job.base, job.config.model)

    def base_model(self, job: TrainingJob) -> tuple[Any, list[str]]:
        return load_classifier(job.base, job.config.model, job.labels)

    def encode(self, tokenizer: Any, frame: pd.DataFrame, job: TrainingJob) -> Encoded:
        if not len(frame):  # a torchrun rank other than 0 validates nothing
            return Encoded([], [])
        index = {label: i for i, label in enumerate(job.labels)}
        return encode(tokenizer, [str(t) for t in frame[TEXT]], [index[str(y)] for y in frame[LABEL]],
                      job.config.model.max_length)

    def validator(self, job: TrainingJob, built: Built, val: Encoded, device: torch.device | None) -> Validate:
        labels, batch = job.labels, job.config.training.eval_batch_size

        def validate(model) -> dict[str, float]:
            logits = predict_logits(unwrap(model), val, built.pad_id, batch, device)
            loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.tensor(val.labels))
            met = classification_metrics([labels[i] for i in val.labels], [labels[i] for i in logits.argmax(1)],
                                         labels)
            return {"val_loss": float(loss), "val_accuracy": met["accuracy"], "val_macro_f1": met["macro_f1"]}
        return validate

    def loss(self, job: TrainingJob, train: Encoded) -> LossFn | None:
        weights = class_weights(train.labels, len(job.labels), job.config.training.class_weights)
        if weights is None:
            return None
        w = torch.tensor(weights, dtype=torch.float32)
        return lambda out, labels: torch.nn.functional.cross_entropy(out.logits, labels,
                                                                     weight=w.to(out.logits.device))


class CausalLM:
    """causal_lm: instruction tuning on prompt/response pairs, loss on the response only."""

    collate: Collate = staticmethod(lm.lm_collate)
    monitor: Monitor = ("val_loss", False)

    def tokenizer(self, job: TrainingJob) -> Any:
        return lm.prepare_tokenizer(load_tokenizer(job.base, job.config.model))

    def base_model(self, job: TrainingJob) -> tuple[Any, list[str]]:
        return lm.load_causal_lm(job.base.path, job.config.model), []

    def encode(self, tokenizer: Any, frame: pd.DataFrame, job: TrainingJob) -> lm.LMEncoded:
        return lm.encode_pairs(tokenizer, list(frame[PROMPT]), list(frame[RESPONSE]), job.config.model.max_length)

    def validator(self, job: TrainingJob, built: Built, val: lm.LMEncoded, device: torch.device | None) -> Validate:
        batch = job.config.training.eval_batch_size

        def validate(model) -> dict[str, float]:
            ppl = lm.perplexity(unwrap(model), val, built.pad_id, batch)
            return {"val_loss": float(math.log(ppl)), "val_perplexity": ppl}
        return validate

    def loss(self, job: TrainingJob, train: lm.LMEncoded) -> LossFn | None:
        return None  # the model's own loss (on the response tokens only)


TASK_KINDS: dict[str, TaskKind] = {"sequence_classification": Classification(), "causal_lm": CausalLM()}

IMBALANCE_RATIO = 1.5  # class_weights: auto weights the loss when the largest class is more than this x the smallest


def class_weights(labels: list[int], n_classes: int, mode: str) -> list[float] | None:
    """Inverse-frequency ("balanced") loss weights n / (k * count_c), as scikit-learn computes them; None when the
    loss stays unweighted (``none``, or ``auto`` on a split whose classes are within ``IMBALANCE_RATIO``)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    present = counts[counts > 0]
    if mode == "none" or not len(present) or (mode == "auto" and present.max() <= IMBALANCE_RATIO * present.min()):
        return None
    return [len(labels) / (n_classes * c) if c else 0.0 for c in counts]


def param_groups(model: Any, head: list[str], cfg: TrainingConfig) -> list[dict[str, Any]] | None:
    """AdamW groups: the head's parameters at ``head_learning_rate``, the rest at ``learning_rate`` (None: one group)."""
    if cfg.head_learning_rate is None or not head:
        return None
    heads: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (heads if set(name.split(".")) & set(head) else rest).append(p)
    groups = [{"params": rest}] if rest else []
    return groups + ([{"params": heads, "lr": cfg.head_learning_rate}] if heads else [])


def unwrap(model: Any) -> Any:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def build(job: TrainingJob) -> Built:
    """Seed, load tokenizer and base, attach the method (base frozen); count the parameters."""
    kind = TASK_KINDS[job.task]
    seed_everything(job.config.training.seed)
    tokenizer = kind.tokenizer(job)
    base, fresh = kind.base_model(job)
    model = wrap_with_peft(base, job.config.peft, job.task, fresh)
    trainable, total = count_parameters(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Built(model=model, tokenizer=tokenizer, pad_id=pad, trainable=trainable, total=total,
                 head=head_modules(fresh))


def train_adapter(job: TrainingJob, train_frame: pd.DataFrame, val_frame: pd.DataFrame, adapter_dir: Path | None,
                  on_epoch: EpochCallback | None = None, parallel: Parallel | None = None,
                  on_step: StepCallback | None = None) -> TrainedAdapter:
    """Build, train on ``train_frame`` (validating on ``val_frame`` after each epoch), save only what was trained
    to ``adapter_dir`` (with metadata and manifest; skipped when None or not the writer) and describe the result."""
    kind, cfg = TASK_KINDS[job.task], job.config
    built = build(job)
    device = parallel.device if parallel is not None else None
    model = parallel.wrap(built.model.to(device)) if parallel is not None else built.model
    train_enc = kind.encode(built.tokenizer, train_frame, job)
    val_enc = kind.encode(built.tokenizer, val_frame, job)
    stats = train(model, train_enc, val_enc, built.pad_id, cfg.training, on_epoch=on_epoch,
                  collate_fn=_on_device(kind.collate, device), validate=kind.validator(job, built, val_enc, device),
                  monitor=kind.monitor, param_groups=param_groups(model, built.head, cfg.training),
                  loss_fn=kind.loss(job, train_enc), on_step=on_step)
    saving = adapter_dir is not None and (parallel is None or parallel.writer)
    digest = save_adapter(unwrap(model), adapter_dir, job.metadata(), cfg.peft) if saving else ""
    return TrainedAdapter(model=unwrap(model), tokenizer=built.tokenizer, adapter_dir=adapter_dir if saving else None,
                          digest=digest, size_bytes=dir_size(adapter_dir) if saving else 0,
                          trainable_params=built.trainable, total_params=built.total, stats=stats,
                          max_length=cfg.model.max_length, batch_size=cfg.training.eval_batch_size)


def load_trained(job: TrainingJob, adapter_dir: Path, digest: str, stats: TrainStats, trainable: int, total: int
                 ) -> TrainedAdapter:
    """A saved adapter back on a fresh base (after torchrun, or the comparison's winner), described as trained."""
    kind = TASK_KINDS[job.task]
    base, _ = kind.base_model(job)
    model = load_weights(base, adapter_dir, read_metadata(adapter_dir))
    return TrainedAdapter(model=model, tokenizer=kind.tokenizer(job), adapter_dir=adapter_dir, digest=digest,
                          size_bytes=dir_size(adapter_dir), trainable_params=trainable, total_params=total,
                          stats=stats, max_length=job.config.model.max_length,
                          batch_size=job.config.training.eval_batch_size)


def _on_device(collate_fn: Collate, device: torch.device | None) -> Collate:
    if device is None:
        return collate_fn

    def moved(enc: Any, batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
        return {n: t.to(device) for n, t in collate_fn(enc, batch, pad_id).items()}
    return moved
