"""Benchmark: adaptrail's training task vs Hugging Face's ``Trainer`` (and a plain loop), and LoRA vs full fine-tuning
memory on MiniLM and on a BERT-base-sized encoder.

Trains on real texts from ``../shared/data`` (``--data sms_spam`` or ``clinc150``; a seeded stratified 80/20
train/test split) with the recipe that ships in ``configs/default.yaml`` (its ``peft`` section; ``training``
learning rate, warm-up, clipping, length grouping), the same data, tokenisation, seed, threads and epochs:

- ``adaptrail``: ``tasks.training.loop.train`` (the code the flows run), with the shipped training defaults;
- ``trainer``: ``transformers.Trainer`` with ``group_by_length=True`` and ``DataCollatorWithPadding`` (dynamic
  padding), a linear schedule with the same warm-up, the same clipping, no logging, saving or evaluation in the loop;
- ``plain``: a textbook loop (``DataLoader(shuffle=True)`` + ``DataCollatorWithPadding``);
- ``-lora`` / ``-full``: the shipped LoRA, or every weight trained (``peft.method: full``, lr 5e-5);
- ``+nofuse``, ``+release``, ``+gc``: adaptrail with ``training.fuse_lora: false``, ``training.release_memory: true``,
  ``training.gradient_checkpointing: true``; several may be combined (``adaptrail-lora+nofuse+release``);
- ``@bert-base``: a random-init BERT-base-sized encoder (12 layers, 768 wide, 110M parameters) built from a config
  instead of MiniLM, trained on the first ``--memory-rows`` training texts (its memory, not its quality, is the point).

Each mode runs in its own fresh process so that its peak RSS (``ru_maxrss``, read before evaluation) is its own.
Throughput counts real (non-padding) tokens per second of the training loop only (model loading, tokenisation and
evaluation excluded in all modes). Test macro-F1 is computed with the same inference code for every mode.
Usage: ``.venv/bin/python bench/train_speed.py [--data sms_spam] [--rows N] [--epochs 1] [--modes ...]``.
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
DATA = ROOT.parent / "shared" / "data"
MAX_LENGTH = 96  # configs/default.yaml's model.max_length
FULL_LEARNING_RATE = 5e-5
OPTIONS = {"nofuse": {"fuse_lora": False}, "release": {"release_memory": True},
           "gc": {"gradient_checkpointing": True}}
DEFAULT_MODES = ("adaptrail-lora,trainer-lora,adaptrail-lora+nofuse,adaptrail-lora+release,adaptrail-full,"
                 "adaptrail-lora@bert-base,adaptrail-full@bert-base,adaptrail-lora+gc@bert-base,"
                 "adaptrail-full+gc@bert-base")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _recipe() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))


def _split(args):
    """(train texts, train labels, test texts, test labels, label names): stratified 80/20, seeded."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(DATA / args.data / "normalized.csv")
    if args.rows and args.rows < len(frame):
        frame = frame.sample(n=args.rows, random_state=args.seed).reset_index(drop=True)
    labels = sorted(frame["label"].astype(str).unique())
    y = [labels.index(str(v)) for v in frame["label"]]
    tr_x, te_x, tr_y, te_y = train_test_split([str(t) for t in frame["text"]], y, test_size=0.2,
                                              random_state=args.seed, stratify=y)
    return tr_x, tr_y, te_x, te_y, labels


def _model(method: str, base: str, labels: list[str]):
    """(model to train, tokenizer): MiniLM with a fresh head, or a random-init BERT-base-sized encoder; the shipped
    LoRA, or every weight trainable."""
    from tasks.core.config import ModelConfig
    from tasks.core.peft_config import PeftConfig
    from tasks.training.model import load_classifier, load_tokenizer, resolve_base_model, wrap_with_peft

    mcfg = ModelConfig(max_length=MAX_LENGTH)
    ref = resolve_base_model(mcfg)
    if base == "bert-base":
        from transformers import BertConfig, BertForSequenceClassification

        model = BertForSequenceClassification(BertConfig(num_labels=len(labels)))  # 12 x 768, vocab 30,522
        fresh = [n for n, _ in model.named_parameters() if n.startswith("classifier.")]
    else:
        model, fresh = load_classifier(ref, mcfg, labels)
    pcfg = PeftConfig(method="full") if method == "full" else PeftConfig(**_recipe()["peft"])
    return wrap_with_peft(model, pcfg, "sequence_classification", fresh), load_tokenizer(ref, mcfg)


def _training_config(args, method: str, options: list[str]):
    from tasks.core.config import TrainingConfig

    shipped = {k: v for k, v in _recipe()["training"].items() if k not in ("epochs", "batch_size", "seed")}
    if method == "full":
        shipped["learning_rate"] = FULL_LEARNING_RATE
    extra = {k: v for o in options for k, v in OPTIONS[o].items()}
    return TrainingConfig(**{**shipped, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                             "num_threads": args.threads, **extra})


def run_adaptrail(args, model, tok, train_x, train_y, method: str, options: list[str]) -> dict:
    """adaptrail's own training task (the code the flows run)."""
    from tasks.training.loop import Encoded, encode, train

    enc = encode(tok, train_x, train_y, MAX_LENGTH)
    cfg = _training_config(args, method, options)
    stats = train(model, enc, Encoded([], []), tok.pad_token_id, cfg)
    return {"seconds": stats.seconds, "real_tokens": stats.real_tokens, "padded_tokens": stats.padded_tokens,
            "steps": stats.steps, "final_loss": stats.history[-1]["train_loss"]}


class _Counting:
    """``DataCollatorWithPadding`` that counts real and padded tokens of what it hands to the model."""

    def __init__(self, tok):
        from transformers import DataCollatorWithPadding

        self.inner, self.real, self.padded = DataCollatorWithPadding(tok, padding="longest"), 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real += int(batch["attention_mask"].sum())
        self.padded += batch["attention_mask"].numel()
        return batch


def run_trainer(args, model, tok, train_x, train_y, method: str) -> dict:
    """``transformers.Trainer`` as a practitioner sets it up: length-grouped batches, dynamic padding, the same
    hyper-parameters; timed from ``on_train_begin`` to ``on_train_end`` (the training loop only)."""
    import tempfile

    from transformers import Trainer, TrainerCallback, TrainingArguments

    recipe = _training_config(args, method, [])
    ids = tok(train_x, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    features = [{"input_ids": i, "labels": y} for i, y in zip(ids, train_y)]
    collator, clock = _Counting(tok), {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            clock["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            clock["seconds"] = time.perf_counter() - clock["start"]

    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-trainer-"), per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=recipe.learning_rate, weight_decay=recipe.weight_decay,
        warmup_ratio=recipe.warmup_ratio, lr_scheduler_type="linear", max_grad_norm=recipe.max_grad_norm or 0.0,
        group_by_length=True, seed=args.seed, data_seed=args.seed, use_cpu=True, dataloader_num_workers=0,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=features, data_collator=collator, callbacks=[Clock()])
    out = trainer.train()
    return {"seconds": clock["seconds"], "real_tokens": collator.real, "padded_tokens": collator.padded,
            "steps": out.global_step, "final_loss": out.training_loss}


def run_plain(args, model, tok, train_x, train_y, method: str) -> dict:
    """A hand-written peft + torch loop: random batches padded to their longest example."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    recipe = _training_config(args, method, [])
    ids = tok(train_x, truncation=True, max_length=MAX_LENGTH)["input_ids"]
    features = [{"input_ids": i, "labels": y} for i, y in zip(ids, train_y)]
    collator = _Counting(tok)
    loader = DataLoader(features, batch_size=args.batch_size, shuffle=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate)
    total = math.ceil(len(features) / args.batch_size) * args.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total), total)
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
            losses.append(loss.item())
    tail = losses[-math.ceil(len(features) / args.batch_size):]
    return {"seconds": time.perf_counter() - start, "real_tokens": collator.real, "padded_tokens": collator.padded,
            "steps": len(losses), "final_loss": sum(tail) / len(tail)}


def _test_macro_f1(model, tok, test_x, test_y) -> float:
    from sklearn.metrics import f1_score

    from tasks.training.loop import encode, predict_logits

    logits = predict_logits(model, encode(tok, test_x, test_y, MAX_LENGTH), tok.pad_token_id, 128)
    return float(f1_score(test_y, logits.argmax(axis=1), average="macro"))


def child(args) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("ADAPTRAIL_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "adaptrail-bench"))
    from tasks.core.state import apply_environment_defaults

    apply_environment_defaults()  # offline HF defaults
    import torch

    from tasks.training.loop import seed_everything

    torch.set_num_threads(args.threads)
    spec, _, base = args.mode.partition("@")
    name, *options = spec.split("+")
    who, method = name.split("-", 1)
    train_x, train_y, test_x, test_y, labels = _split(args)
    if base == "bert-base":
        train_x, train_y = train_x[:args.memory_rows], train_y[:args.memory_rows]
    seed_everything(args.seed)
    model, tok = _model(method, base or "minilm", labels)
    rss_loaded = _rss_mib()
    if who == "adaptrail":
        result = run_adaptrail(args, model, tok, train_x, train_y, method, options)
    else:
        result = (run_trainer if who == "trainer" else run_plain)(args, model, tok, train_x, train_y, method)
    result.update(mode=args.mode, rss_after_load_mib=rss_loaded, peak_rss_mib=_rss_mib(),
                  test_macro_f1=None if base == "bert-base" else _test_macro_f1(model, tok, test_x, test_y))
    print("RESULT " + json.dumps(result))


def spawn(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--data", args.data, "--rows", str(args.rows),
           "--epochs", str(args.epochs), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--seed", str(args.seed), "--memory-rows", str(args.memory_rows)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr[-4000:]}")
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _tps(r: dict) -> float:
    return r["real_tokens"] / r["seconds"]


def _line(r: dict) -> str:
    f1 = "n/a (random init)" if r["test_macro_f1"] is None else f"{r['test_macro_f1']:.4f}"
    return (f"{r['mode']:28s} {r['real_tokens']:>8,} real tokens ({r['real_tokens'] / r['padded_tokens']:.1%} of "
            f"padded) in {r['seconds']:6.1f} s = {_tps(r):7.1f} real tokens/s; test macro-F1 {f1}; peak RSS "
            f"{r['peak_rss_mib']:,.0f} MiB (after load {r['rss_after_load_mib']:,.0f})")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def summary(results: dict[str, dict]) -> list[str]:
    """The ratios each target is judged on, for the modes that ran."""
    out, have = [], results.keys()
    if {"adaptrail-lora", "trainer-lora"} <= have:
        a, t = results["adaptrail-lora"], results["trainer-lora"]
        speed, rss, df1 = _tps(a) / _tps(t), a["peak_rss_mib"] / t["peak_rss_mib"], a["test_macro_f1"] - t["test_macro_f1"]
        out += [f"speed: adaptrail default / Trainer = {speed:.2f}x real tokens/s (target >= 1.3x: "
                f"{_verdict(speed >= 1.3)})",
                f"quality: test macro-F1 {a['test_macro_f1']:.4f} vs {t['test_macro_f1']:.4f}, difference {df1:+.4f} "
                f"(target no loss beyond 0.01: {_verdict(df1 >= -0.01)}; within 0.01 either way: "
                f"{'yes' if abs(df1) <= 0.01 else 'no'})",
                f"memory: adaptrail default / Trainer peak RSS = {rss:.2f}x (target <= 1.0x: {_verdict(rss <= 1.0)})"]
    for other, what in (("adaptrail-lora+nofuse", "training.fuse_lora on / off"),
                        ("adaptrail-lora+release", "training.release_memory off (default) / on"),
                        ("plain-lora", "adaptrail default / plain loop")):
        if {"adaptrail-lora", other} <= have:
            a, o = results["adaptrail-lora"], results[other]
            out.append(f"{what}: {_tps(a) / _tps(o):.2f}x real tokens/s, {a['peak_rss_mib'] / o['peak_rss_mib']:.2f}x "
                       "peak RSS")
    for base, target in (("", None), ("@bert-base", 0.6)):
        for option, how in (("", ""), ("+gc", ", both with gradient checkpointing")):
            lora, full = f"adaptrail-lora{option}{base}", f"adaptrail-full{option}{base}"
            if {lora, full} <= have:
                ratio = results[lora]["peak_rss_mib"] / results[full]["peak_rss_mib"]
                judged = f" (target <= {target}x: {_verdict(ratio <= target)})" if target else ""
                out.append(f"memory {base.lstrip('@') or 'MiniLM'}: LoRA / full fine-tuning peak RSS = {ratio:.2f}x"
                           f"{how}{judged}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="sms_spam", choices=["sms_spam", "clinc150"])
    ap.add_argument("--rows", type=int, default=0, help="sample this many texts before the split (0: all)")
    ap.add_argument("--memory-rows", type=int, default=480, help="training texts of the @bert-base modes")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--modes", default=DEFAULT_MODES)
    ap.add_argument("--child", dest="mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)
    if not (DATA / args.data / "normalized.csv").is_file():
        sys.exit(f"benchmark data not found: {DATA / args.data} (needs ../shared/data beside the project)")
    results = {}
    for mode in args.modes.split(","):
        results[mode] = spawn(mode, args)
        print(_line(results[mode]), flush=True)
    for line in summary(results):
        print(line)
    print(f"settings: {args.data}, {args.rows or 'all'} rows (80% trained), {args.epochs} epoch(s), batch "
          f"{args.batch_size}, {args.threads} threads, max_length {MAX_LENGTH}, seed {args.seed}; recipe "
          f"configs/default.yaml peft {_recipe()['peft']}")


if __name__ == "__main__":
    main()
