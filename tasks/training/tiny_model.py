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


LM_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]  # pad, unk, bos, eos of the tiny causal LMs


def _word_tokenizer(texts: list[str], max_words: int):
    """An offline word-level fast tokenizer (same words as ``_vocab``) with pad/unk/bos/eos tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [w for w in _vocab(texts, max_words) if w not in SPECIAL]
    vocab = {w: i for i, w in enumerate(LM_SPECIAL + words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                  pre_tokenizers.Punctuation(behavior="isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def _save_lm(model_cls, config, tokenizer, out_dir: Path, seed: int) -> Path:
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model_cls(config).save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_llama(out_dir: Path, texts: list[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                     seed: int = 0, max_words: int = 2000) -> Path:
    """A 2-layer random-init Llama causal LM with a word-level tokenizer from ``texts`` (safetensors, offline)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _word_tokenizer(texts, max_words)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    return _save_lm(LlamaForCausalLM, config, tok, out_dir, seed)


def build_tiny_gpt2(out_dir: Path, texts: list[str], hidden: int = 32, layers: int = 2, heads: int = 2,
                    seed: int = 0, max_words: int = 2000) -> Path:
    """A 2-layer random-init GPT-2 causal LM with a word-level tokenizer from ``texts`` (safetensors, offline)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _word_tokenizer(texts, max_words)
    config = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _save_lm(GPT2LMHeadModel, config, tok, out_dir, seed)


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.training.tiny_model {bert,llama,gpt2} OUT_DIR [DATA]``: a tiny random-init base for smoke runs.

    The vocabulary comes from DATA's texts (default: the example instruction pairs, prompts and responses).
    """
    import argparse

    import pandas as pd

    root = Path(__file__).resolve().parents[2]  # the project root (tasks/training/tiny_model.py)
    ap = argparse.ArgumentParser(prog="python -m tasks.training.tiny_model", description=main.__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["bert", "llama", "gpt2"])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("data", nargs="?", type=Path, default=root / "examples" / "support_instructions.jsonl")
    args = ap.parse_args(argv)
    frame = pd.read_json(args.data, lines=True) if args.data.suffix == ".jsonl" else pd.read_csv(args.data)
    texts = [str(t) for col in frame.columns if frame[col].dtype == object for t in frame[col]]
    build = {"bert": build_tiny_bert, "llama": build_tiny_llama, "gpt2": build_tiny_gpt2}[args.kind]
    print(build(args.out_dir, texts))


if __name__ == "__main__":
    main()
