"""Tiny, seeded, random-init base models built from a config: keep tests fast and offline."""

from __future__ import annotations

import re
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab(texts: list[str], max_words: int) -> list[str]:
    counts: dict[str, int] = {}
    for t in texts:
        for w in re.findall(r"\w+|[^\w\s]", str(t).lower()):
            counts[w] = counts.get(w, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    return SPECIAL + sorted(words)


def build_tiny_bert(out_dir: Path, texts: list[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                    seed: int = 0, max_words: int = 2000) -> Path:
    """A 2-layer BERT encoder with a word-level vocabulary from ``texts``, saved like a hub model (safetensors)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(_vocab(texts, max_words)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=256)
    BertModel(config).save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
