"""Causal-LM instruction tuning: prompt/response data, response-only loss, perplexity, greedy exact match.

The data keeps the canonical columns of ``tasks/data.py`` so digests, dataset logging and validation are shared:
the prompt is the ``text`` column, the response the ``label`` column (``PROMPT``/``RESPONSE`` below).
A training example is ``[bos] prompt response [eos]``; only response and eos tokens carry a loss (others -100).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tasks.config import DataConfig, ModelConfig
from tasks.data import (LABEL, SPLITS, TEXT, DatasetSplits, _canonical, _given_splits, content_digest, deduplicate,
                        file_sha256, read_table)
from tasks.errors import InputError

PROMPT, RESPONSE = TEXT, LABEL
IGNORE = -100  # label of tokens that carry no loss (prompt, padding)
EXAMPLES_IN_REPORT = 20
_NON_WORD = re.compile(r"[^\w]+")


# --- data ---------------------------------------------------------------------------------------------------


def random_split(frame: pd.DataFrame, validation_size: float, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Deterministic shuffled split (responses are free text, so there are no classes to stratify on)."""
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test, n_val = int(round(len(frame) * test_size)), int(round(len(frame) * validation_size))
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {s: frame.iloc[np.sort(parts[s])].reset_index(drop=True) for s in SPLITS}


def load_lm_splits(cfg: DataConfig) -> DatasetSplits:
    """Prompt/response pairs from any reader of ``tasks/data.py``, split and fingerprinted like labelled data."""
    path = Path(cfg.path).expanduser()
    raw, given_split = read_table(path, cfg.format)
    if len(raw) == 0:
        raise InputError(f"the dataset {path} has no rows; point data.path at a file with prompt/response pairs")
    if cfg.prompt_column not in raw.columns or cfg.response_column not in raw.columns:
        raise InputError(f"model.task causal_lm needs columns {cfg.prompt_column!r} and {cfg.response_column!r} "
                         f"(the data has {list(raw.columns)}); set data.prompt_column / data.response_column")
    frame = _canonical(raw, cfg.model_copy(update={"text_column": cfg.prompt_column,
                                                   "label_column": cfg.response_column}))
    if given_split is not None:
        frame["split"] = given_split.values
    dedup: dict[str, Any] = {"enabled": False}
    if cfg.deduplicate:
        frame, dedup = deduplicate(frame)
    if "split" in frame:
        splits = _given_splits(frame, cfg)
    else:
        splits = random_split(frame, cfg.validation_size, cfg.test_size, cfg.seed)
    if len(splits["train"]) == 0 or len(splits["test"]) == 0:
        raise InputError(f"the dataset {path} has too few rows to split into train/validation/test ({len(frame)} "
                         "rows); add pairs or use data.split_column")
    return DatasetSplits(train=splits["train"], validation=splits["validation"], test=splits["test"], labels=[],
                         digest=content_digest(splits), source=str(path.resolve()),
                         source_digest=file_sha256(path) if path.is_file() else content_digest(splits),
                         has_group="group" in frame.columns, dedup=dedup)


# --- model and tokenizer --------------------------------------------------------------------------------------


def load_causal_lm(base_path: str, cfg: ModelConfig):
    """The frozen base as a causal LM (safetensors only)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_path, trust_remote_code=cfg.trust_remote_code,
                                                use_safetensors=True)


def prepare_tokenizer(tokenizer):
    """A causal LM tokenizer needs an eos (the response's end); padding falls back to eos when it has no pad."""
    if tokenizer.eos_token_id is None:
        raise InputError("the base model's tokenizer has no eos token; causal_lm training needs one to end responses")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --- encoding and batches -------------------------------------------------------------------------------------


@dataclass
class LMEncoded:
    """Token ids per example (unpadded); the first ``prompt_lengths[i]`` tokens carry no loss."""

    input_ids: list[list[int]]
    prompt_lengths: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.input_ids]


def _ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer([str(t) for t in texts], add_special_tokens=False)["input_ids"] if texts else []


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def prompt_ids(tokenizer, prompts: list[str], max_length: int) -> list[list[int]]:
    """``[bos] prompt``, keeping the prompt's end when it is too long (the part next to the answer)."""
    bos = _bos(tokenizer)
    keep = max(1, max_length - len(bos))
    return [bos + p[-keep:] for p in _ids(tokenizer, prompts)]


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int) -> LMEncoded:
    """``[bos] prompt response [eos]`` in at most ``max_length`` tokens; the response keeps up to half of them."""
    bos, eos = _bos(tokenizer), [tokenizer.eos_token_id]
    ids, prompt_lengths = [], []
    for p, r in zip(_ids(tokenizer, prompts), _ids(tokenizer, responses)):
        tail = (r + eos)[: max(1, max_length // 2)]
        head = bos + p[len(p) - max(0, min(len(p), max_length - len(bos) - len(tail))):]
        ids.append(head + tail)
        prompt_lengths.append(len(head))
    return LMEncoded(ids, prompt_lengths)


def encode_texts(tokenizer, texts: list[str], max_length: int) -> LMEncoded:
    """Plain text scored as a whole (every token after bos): general-text perplexity, sentence likelihoods."""
    bos = _bos(tokenizer)
    ids = [(bos + t)[:max_length] for t in _ids(tokenizer, texts)]
    return LMEncoded(ids, [len(bos)] * len(ids))


def lm_collate(enc: LMEncoded, batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded to the batch's longest example; prompt and padding positions are labelled -100."""
    width = max(len(enc.input_ids[i]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, i in enumerate(batch):
        seq = torch.tensor(enc.input_ids[i], dtype=torch.long)
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
        labels[row, enc.prompt_lengths[i]: len(seq)] = seq[enc.prompt_lengths[i]:]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# --- scoring --------------------------------------------------------------------------------------------------


@torch.no_grad()
def token_logprobs(model, enc: LMEncoded, pad_id: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the summed log-probability of its scored tokens, and how many tokens were scored."""
    model.eval()
    total, count = np.zeros(len(enc)), np.zeros(len(enc), dtype=np.int64)
    order = sorted(range(len(enc)), key=lambda i: enc.lengths[i])
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        inputs = lm_collate(enc, batch, pad_id)
        labels = inputs.pop("labels")[:, 1:]
        logits = model(**inputs).logits[:, :-1].float()
        keep = labels != IGNORE
        lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total[batch] = (lp * keep).sum(1).numpy()
        count[batch] = keep.sum(1).numpy()
    return total, count


def perplexity(model, enc: LMEncoded, pad_id: int, batch_size: int) -> float:
    """exp of the mean negative log-likelihood per scored token."""
    total, count = token_logprobs(model, enc, pad_id, batch_size)
    return float(math.exp(-total.sum() / count.sum())) if count.sum() else float("nan")


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_length: int, max_new_tokens: int, batch_size: int
             ) -> list[str]:
    """Greedy continuations (left-padded batches of similar length), cut at eos, special tokens dropped."""
    model.eval()
    enc = prompt_ids(tokenizer, prompts, max(1, max_length - max_new_tokens))
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[str] = [""] * len(enc)
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    for k in range(0, len(order), batch_size):
        batch = order[k:k + batch_size]
        width = max(len(enc[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, width - len(enc[i]):] = torch.tensor(enc[i], dtype=torch.long)
            mask[row, width - len(enc[i]):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=pad, eos_token_id=eos)
        for row, i in enumerate(batch):
            new = gen[row, width:].tolist()
            out[i] = tokenizer.decode(new[: new.index(eos)] if eos in new else new, skip_special_tokens=True)
    return out


# --- metrics and evaluation -----------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Casefolded words only: punctuation becomes a space, whitespace collapses ("Re-check!" -> "re check")."""
    return _NON_WORD.sub(" ", str(text).casefold()).strip()


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """exact_match: normalised prediction equals the reference; prefix_match: it starts with it."""
    pairs = [(normalize_answer(p), normalize_answer(r)) for p, r in zip(predictions, references, strict=True)]
    n = len(pairs)
    exact = sum(p == r for p, r in pairs)
    prefix = sum(p == r or p.startswith(r + " ") for p, r in pairs)
    return {"n": n, "exact_match": exact / n if n else float("nan"), "prefix_match": prefix / n if n else float("nan")}


@dataclass
class LMEvaluation:
    """Per split: response perplexity (and exact match on test); a few test generations for the report."""

    metrics: dict[str, dict[str, Any]]
    examples: list[dict[str, str]] = field(default_factory=list)
    headline: str = "exact_match"

    def headline_metric(self) -> tuple[str, float]:
        return self.headline, float(self.metrics["test"][self.headline])

    def summary_metrics(self) -> dict[str, float]:
        return {f"{split}_{k}": float(v) for split, m in self.metrics.items() for k, v in m.items() if k != "n"}


def evaluate_lm(model, tokenizer, splits: DatasetSplits, max_length: int, max_new_tokens: int, batch_size: int
                ) -> LMEvaluation:
    """Held-out response perplexity (validation, test) and greedy exact match on the test responses."""
    pad = tokenizer.pad_token_id
    metrics: dict[str, dict[str, Any]] = {}
    for name, frame in (("validation", splits.validation), ("test", splits.test)):
        if len(frame):
            enc = encode_pairs(tokenizer, list(frame[PROMPT]), list(frame[RESPONSE]), max_length)
            metrics[name] = {"perplexity": perplexity(model, enc, pad, batch_size)}
    prompts, refs = [str(p) for p in splits.test[PROMPT]], [str(r) for r in splits.test[RESPONSE]]
    preds = generate(model, tokenizer, prompts, max_length, max_new_tokens, batch_size)
    metrics["test"].update(generation_metrics(preds, refs))
    examples = [{"prompt": p, "reference": r, "generated": g}
                for p, r, g in list(zip(prompts, refs, preds))[:EXAMPLES_IN_REPORT]]
    return LMEvaluation(metrics=metrics, examples=examples)


def evaluation_markdown(ev: LMEvaluation) -> str:
    lines = ["# Evaluation (causal LM)", "", "| split | response perplexity | exact match | prefix match |",
             "|---|---|---|---|"]
    for split, m in ev.metrics.items():
        em, pm = m.get("exact_match"), m.get("prefix_match")
        lines.append(f"| {split} | {m['perplexity']:.4g} | {'' if em is None else f'{em:.4f}'} | "
                     f"{'' if pm is None else f'{pm:.4f}'} |")
    lines += ["", "## Test generations", "", "| prompt | reference | generated |", "|---|---|---|"]
    for e in ev.examples:
        cells = [str(e[k]).replace("|", "\\|").replace("\n", " ")[:120] for k in ("prompt", "reference", "generated")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
