"""Causal-LM instruction tuning: the model, prompt/response encoding with a response-only loss, perplexity and
greedy generation (data in ``tasks/data/lm.py``, evaluation in ``tasks/gates/lm_evaluation.py``).

A training example is ``[bos] prompt response [eos]``; only response and eos tokens carry a loss (others -100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tasks.core.config import ModelConfig
from tasks.core.errors import InputError

IGNORE = -100  # label of tokens that carry no loss (prompt, padding)


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
