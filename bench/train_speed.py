"""Benchmark: adaptrail's training task vs a plain hand-written peft + torch loop, and LoRA vs full fine-tuning memory.

Trains LoRA on the MiniLM base over real SMS texts (``../shared/data/sms_spam``) with the same data, tokenisation,
hyperparameters, seed and thread count:

- ``adaptrail``: ``tasks.training.train`` (length-grouped batches, padding to the longest example of each batch);
- ``plain``: a textbook loop (``DataLoader(shuffle=True)`` + ``DataCollatorWithPadding``, i.e. padding to the
  longest example of each randomly drawn batch), the way a user's own script usually looks;
- ``full``: adaptrail's training task with ``peft.method: full`` (every weight trainable), for peak memory;
- ``+gc``: the same with ``training.gradient_checkpointing`` (e.g. ``adaptrail-lora+gc,adaptrail-full+gc``);
- ``+keep``: the same with ``training.release_memory: false`` (the allocator keeps freed memory: faster, more RSS).

Each mode runs in its own fresh process so that its peak RSS (``ru_maxrss``) is its own. Throughput counts real
(non-padding) tokens per second of the training loop only (model loading and tokenisation excluded in all modes).
Usage: ``.venv/bin/python bench/train_speed.py [--rows N] [--epochs 1] [--threads 2] [--batch-size 32]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sms_spam" / "normalized.csv"
MAX_LENGTH = 128
LEARNING_RATE = {"lora": 2e-3, "full": 5e-5}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load(rows: int, seed: int):
    import pandas as pd

    frame = pd.read_csv(DATA)
    if rows and rows < len(frame):
        frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    labels = sorted(frame["label"].astype(str).unique())
    return [str(t) for t in frame["text"]], [labels.index(str(y)) for y in frame["label"]], labels


def _model(method: str, labels: list[str]):
    from tasks.core.config import ModelConfig
    from tasks.core.peft_config import PeftConfig
    from tasks.training.model import load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft

    mcfg = ModelConfig(max_length=MAX_LENGTH)
    ref = resolve_base_model(mcfg)
    model, fresh = load_classifier(ref, mcfg, labels)
    pcfg = PeftConfig(method=method) if method == "full" else PeftConfig(r=8, alpha=16, dropout=0.1,
                                                                         target_modules=["query", "value"])
    return wrap_with_peft(model, pcfg, "sequence_classification", fresh), load_tokenizer(ref, mcfg)


# The README's numbers were measured with release_memory on (the default then); "" keeps it on explicitly.
OPTIONS = {"": {"release_memory": True}, "gc": {"gradient_checkpointing": True, "release_memory": True},
           "keep": {"release_memory": False}}


def run_adaptrail(args, method: str, option: str = "") -> dict:
    """adaptrail's own training task (the code the flows run) with a mode's ``+option`` (see OPTIONS)."""
    from tasks.core.config import TrainingConfig
    from tasks.training.loop import Encoded, encode, seed_everything, train

    texts, y, labels = _load(args.rows, args.seed)
    seed_everything(args.seed)
    model, tok = _model(method, labels)
    enc = encode(tok, texts, y, MAX_LENGTH)
    cfg = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=LEARNING_RATE[method],
                         warmup_ratio=0.06, seed=args.seed, num_threads=args.threads, group_by_length=True,
                         **OPTIONS[option])
    rss_loaded = _rss_mib()
    stats = train(model, enc, Encoded([], []), tok.pad_token_id, cfg)
    return {"mode": f"adaptrail-{method}" + (f"+{option}" if option else ""), "seconds": stats.seconds, "real_tokens": stats.real_tokens,
            "padded_tokens": stats.padded_tokens, "steps": stats.steps, "final_loss": stats.history[-1]["train_loss"],
            "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib()}


def run_plain(args) -> dict:
    """A hand-written peft + torch loop: random batches padded to their longest example."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

    torch.set_num_threads(args.threads)
    texts, y, labels = _load(args.rows, args.seed)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    model, tok = _model("lora", labels)
    ids = tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    features = [{"input_ids": i, "labels": label} for i, label in zip(ids, y)]
    loader = DataLoader(features, batch_size=args.batch_size, shuffle=True,
                        collate_fn=DataCollatorWithPadding(tok, padding="longest"),
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE["lora"])
    total = math.ceil(len(features) / args.batch_size) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * total), total)
    rss_loaded = _rss_mib()
    real = padded = steps = 0
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
            steps += 1
            losses.append(loss.item())
    seconds = time.perf_counter() - start
    tail = losses[-math.ceil(len(features) / args.batch_size):]
    return {"mode": "plain-lora", "seconds": seconds, "real_tokens": real, "padded_tokens": padded, "steps": steps,
            "final_loss": sum(tail) / len(tail), "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_mib()}


def child(args) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("ADAPTRAIL_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "adaptrail-bench"))
    from tasks.core.state import apply_environment_defaults

    apply_environment_defaults()  # offline HF defaults

    mode, _, option = args.mode.partition("+")
    result = run_plain(args) if mode == "plain-lora" else run_adaptrail(args, mode.split("-", 1)[1], option)
    print("RESULT " + json.dumps(result))


def spawn(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--rows", str(args.rows), "--epochs", str(args.epochs),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr[-4000:]}")
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=0, help="sample this many texts (0: all 5,574)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--modes", default="adaptrail-lora,plain-lora,adaptrail-full,adaptrail-lora+gc,adaptrail-full+gc")
    ap.add_argument("--child", dest="mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)
    if not DATA.is_file():
        sys.exit(f"benchmark data not found: {DATA} (needs ../shared/data/sms_spam beside the project)")
    results = {}
    for mode in args.modes.split(","):
        r = results[mode] = spawn(mode, args)
        print(f"{mode:15s} {r['real_tokens']:>9,} real tokens ({r['padded_tokens']:,} with padding, "
              f"{r['real_tokens'] / r['padded_tokens']:.1%} real) in {r['seconds']:7.1f} s = "
              f"{r['real_tokens'] / r['seconds']:8.1f} real tokens/s; final epoch loss {r['final_loss']:.4f}; "
              f"peak RSS {r['peak_rss_mib']:,.0f} MiB (after load {r['rss_after_load_mib']:,.0f} MiB)", flush=True)
    if {"adaptrail-lora", "plain-lora"} <= results.keys():
        a, p = results["adaptrail-lora"], results["plain-lora"]
        ratio = (a["real_tokens"] / a["seconds"]) / (p["real_tokens"] / p["seconds"])
        print(f"throughput: adaptrail / plain loop = {ratio:.2f}x real tokens/s (target >= 1.3x: "
              f"{'met' if ratio >= 1.3 else 'NOT met'})")
    if {"adaptrail-lora", "adaptrail-full"} <= results.keys():
        lo, fu = results["adaptrail-lora"], results["adaptrail-full"]
        ratio = lo["peak_rss_mib"] / fu["peak_rss_mib"]
        growth = (lo["peak_rss_mib"] - lo["rss_after_load_mib"]) / max(1.0, fu["peak_rss_mib"] - fu["rss_after_load_mib"])
        print(f"memory: LoRA / full fine-tuning peak RSS = {ratio:.2f}x (target <= 0.8x: "
              f"{'met' if ratio <= 0.8 else 'NOT met'}); growth during training {growth:.2f}x")
    if {"adaptrail-lora+gc", "adaptrail-full+gc"} <= results.keys():
        lo, fu = results["adaptrail-lora+gc"], results["adaptrail-full+gc"]
        ratio = lo["peak_rss_mib"] / fu["peak_rss_mib"]
        print(f"memory with gradient checkpointing: LoRA / full fine-tuning peak RSS = {ratio:.2f}x (target <= "
              f"0.8x: {'met' if ratio <= 0.8 else 'NOT met'})")
    if {"adaptrail-lora", "adaptrail-lora+keep"} <= results.keys():
        on, off = results["adaptrail-lora"], results["adaptrail-lora+keep"]
        print(f"training.release_memory on / off: {(on['real_tokens'] / on['seconds']) / (off['real_tokens'] / off['seconds']):.2f}x "
              f"tokens/s, {on['peak_rss_mib'] / off['peak_rss_mib']:.2f}x peak RSS")
    print(f"settings: {args.rows or 'all'} rows, {args.epochs} epoch(s), batch {args.batch_size}, "
          f"{args.threads} threads, max_length {MAX_LENGTH}, seed {args.seed}")


if __name__ == "__main__":
    main()
