"""The base encoder's representation of texts (mean of the last hidden states over real tokens), as
sentence-transformers pools all-MiniLM-L6-v2: what monitoring compares to see whether new texts still look like the
ones an adapter was approved on, independently of the adapter itself."""

from __future__ import annotations

import numpy as np
import torch

from tasks.training.loop import encode, length_sorted_batches


def load_encoder(path: str, trust_remote_code: bool = False):
    """The bare base encoder (no head, no adapter) from a verified base-model folder."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model.eval()


@torch.inference_mode()
def mean_pooled(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """(n, hidden) float32 embeddings in input order; batches sorted by length so padding stays small."""
    enc = encode(tokenizer, list(texts), [0] * len(texts), max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(enc), encoder.config.hidden_size), dtype=np.float32)
    for batch, inputs in length_sorted_batches(enc, pad, batch_size):
        hidden = encoder(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out[batch] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().numpy()
    return out
