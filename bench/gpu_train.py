"""GPU benchmark: LoRA on a ~1B-parameter Llama-style causal LM in bf16, adaptrail's training loop vs ``Trainer``.

For a lent GPU machine (torch, transformers 4.57 or 5.x, peft; no MLflow, Prefect or Great Expectations). The model
comes from a ``LlamaConfig`` with random weights and the data are seeded random token ids of one length (nothing is
downloaded, no padding). The same LoRA (adaptrail's default: r=8, alpha=16, no dropout, every linear layer but the
head) is trained with the same data, learning rate, batch, steps and seed by ``adaptrail``
(``tasks.training.methods.attach`` + ``tasks.training.loop.train`` with ``causal_lm.lm_collate``) and by ``trainer``
(``peft.get_peft_model`` + ``transformers.Trainer``, no logging, saving or evaluation). Warm-up steps are not timed.
Usage: ``python bench/gpu_train.py [--steps 30] [--batch-size 16]``; ``--tiny --steps 3``: the CPU smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FORBIDDEN = ("mlflow", "prefect", "great_expectations")  # absent on the GPU machine: the script must not need them
#: bf16 dense tensor-core peak (FLOP/s) by GPU name, first match wins (vendor data sheets, without sparsity).
PEAK_FLOPS = (("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12))


def model_config(tiny: bool) -> Any:
    """The Llama-style config: about 1B parameters (TinyLlama's widths, 16 layers), or a tiny one for the CPU."""
    from transformers import LlamaConfig

    size = (dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4) if tiny else
            dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                 num_attention_heads=32, num_key_value_heads=32))
    return LlamaConfig(**size, max_position_embeddings=2048, tie_word_embeddings=False, use_cache=False,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)


def build_model(config: Any, device: Any, dtype: Any, seed: int) -> Any:
    """Random-init weights made directly on ``device`` in ``dtype`` (no fp32 copy on the GPU), seeded."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.config.use_cache = False  # training needs no KV cache (Trainer in transformers 5 sets the same)
    return model


def synthetic_rows(n: int, seq_len: int, vocab: int, seed: int) -> list[list[int]]:
    """Seeded random token ids (never the pad id 0), ``n`` rows of ``seq_len``."""
    return torch.randint(1, vocab, (n, seq_len), generator=torch.Generator().manual_seed(seed)).tolist()


def adaptrail_api() -> dict[str, Any]:
    """adaptrail's training code, from tasks.training / tasks.core only (no MLflow, Prefect or GX behind them)."""
    from tasks.core.config import TrainingConfig
    from tasks.core.peft_config import PeftConfig
    from tasks.training.causal_lm import LMEncoded, lm_collate
    from tasks.training.loop import train
    from tasks.training.methods import attach

    return {"TrainingConfig": TrainingConfig, "PeftConfig": PeftConfig, "LMEncoded": LMEncoded,
            "lm_collate": lm_collate, "train": train, "attach": attach}


class Clock:
    """Wall time of the timed steps: from the end of the last warm-up step to the end of the last step (synced)."""

    def __init__(self, device: Any):
        self.device, self.start, self.end = device, 0.0, 0.0

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.end - self.start


def peak_mib(device: Any, reset: bool = False) -> float:
    """Peak GPU memory allocated by torch (cuda), or the process's peak RSS (cpu); ``reset`` starts a new peak."""
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return torch.cuda.max_memory_allocated() / 2**20
    if reset:  # Linux: "5" resets the process's peak RSS (VmHWM) to its current RSS
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def counts(model: Any) -> dict[str, int]:
    """Parameters: ``n``, those each token multiplies through (every nn.Linear: frozen base, LoRA A/B, lm_head; the
    input embedding is a lookup, not counted), ``total`` and ``trainable``."""
    params = list(model.parameters())
    return {"n": sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
            "total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


def run_adaptrail(args: argparse.Namespace, data: list[list[int]], device: Any, dtype: Any) -> dict[str, Any]:
    """LoRA through adaptrail's own loop: ``attach`` (peft), ``lm_collate`` and ``loop.train``."""
    api = adaptrail_api()
    pcfg = api["PeftConfig"](r=args.lora_r, alpha=2 * args.lora_r, target_modules=args.targets)
    model = api["attach"](build_model(model_config(args.tiny), device, dtype, args.seed), pcfg, "causal_lm", [])
    total = args.warmup + args.steps
    cfg = api["TrainingConfig"](epochs=1, max_steps=total, batch_size=args.batch_size, learning_rate=args.lr,
                                warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=1.0, seed=args.seed,
                                early_stopping_patience=None, release_memory=False, progress_seconds=3600)
    clock, calls = Clock(device), [0]

    def collate(enc: Any, batch: list[int], pad_id: int) -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == args.warmup + 1:  # the first timed step begins: the warm-up steps are done
            clock.start = clock.now()
        return {k: t.to(device) for k, t in api["lm_collate"](enc, batch, pad_id).items()}

    enc = api["LMEncoded"](data, [0] * len(data))  # prompt length 0: every token carries the loss
    stats = api["train"](model, enc, api["LMEncoded"]([], []), 0, cfg, collate_fn=collate)
    clock.end = clock.now()
    if stats.steps != total:
        raise RuntimeError(f"adaptrail ran {stats.steps} steps, expected {total}")
    return {"seconds": clock.seconds, "loss": stats.history[-1]["train_loss"], **counts(model)}


def run_trainer(args: argparse.Namespace, data: list[list[int]], device: Any, dtype: Any) -> dict[str, Any]:
    """The same LoRA through ``transformers.Trainer`` (written for transformers 4.57 and 5.x)."""
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    lora = LoraConfig(task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                      target_modules=args.targets[0] if args.targets == ["all-linear"] else args.targets)
    model = get_peft_model(build_model(model_config(args.tiny), device, dtype, args.seed), lora)
    total, clock = args.warmup + args.steps, Clock(device)

    class Timer(TrainerCallback):
        def on_step_end(self, targs: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == args.warmup:
                clock.start = clock.now()
            elif state.global_step == total:
                clock.end = clock.now()

    rows = [{"input_ids": t, "attention_mask": torch.ones_like(t), "labels": t}
            for t in (torch.tensor(r, dtype=torch.long) for r in data)]
    out_dir = tempfile.mkdtemp(prefix="gpu_train_trainer_")
    try:
        targs = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=args.batch_size, max_steps=total,
            learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            optim="adamw_torch",  # torch.optim.AdamW, as adaptrail's loop (transformers 5's default is the fused one)
            seed=args.seed, logging_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True,
            use_cpu=device.type == "cpu", bf16=False,  # the weights are already bf16: no autocast, as in adaptrail
            remove_unused_columns=False, label_names=["labels"], dataloader_num_workers=0)
        trainer = Trainer(model=model, args=targs, train_dataset=rows, callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)  # no metrics printed at the end
        result = trainer.train()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    if trainer.state.global_step != total or not clock.end:
        raise RuntimeError(f"Trainer ran {trainer.state.global_step} steps, expected {total}")
    return {"seconds": clock.seconds, "loss": float(result.training_loss), **counts(model)}


def measure(name: str, run: Callable[..., dict[str, Any]], args: argparse.Namespace, data: list[list[int]],
            device: Any, dtype: Any, peak: float | None) -> dict[str, Any]:
    """One trainer's run with its own memory peak; freed afterwards. Adds tokens/s, step time and MFU."""
    peak_mib(device, reset=True)
    r = run(args, data, device, dtype)  # the model, optimizer and Trainer are gone once it returns
    r["peak_mib"] = peak_mib(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next run starts from an empty cache
        r["left_mib"] = torch.cuda.memory_allocated() / 2**20  # ~0 unless something kept the model alive
    tokens = args.steps * args.batch_size * args.seq_len
    r.update(name=name, tokens_per_s=tokens / r["seconds"], step_ms=1000 * r["seconds"] / args.steps)
    # MFU as PaLM defines it (Chowdhery et al. 2022, app. B): the model's training FLOPs per token are 6N, 2N forward
    # + 4N backward (activation and weight gradients), N = the parameters in matrix multiplies. With LoRA the
    # frozen weights still pass activation gradients back (2N) but get no weight gradient, so the GPU really does
    # about 4N: `mfu` (6N) compares with published MFU figures, `mfu_4n` is the work done. Attention scores
    # (12 * layers * hidden * seq FLOPs per token, ~4% at seq 512 here) are left out of both.
    r["mfu"] = 6 * r["n"] * r["tokens_per_s"] / peak if peak else None
    r["mfu_4n"] = 4 * r["n"] * r["tokens_per_s"] / peak if peak else None
    return r


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def choose_device(args: argparse.Namespace) -> Any:
    """cuda when available; the CPU only for --tiny. Exits 2 with a message otherwise."""
    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        fail("--device cuda was requested but CUDA is not available (torch.cuda.is_available() is False)", 2)
    if (args.device == "cpu" or not has_cuda) and not args.tiny:
        fail("the ~1B-parameter run needs a CUDA GPU and none is available here; --tiny runs the CPU smoke test", 2)
    return torch.device("cuda" if has_cuda and args.device != "cpu" else "cpu")


def device_peak(device: Any, override: float | None) -> tuple[str, float | None]:
    """The device's name and bf16 dense peak FLOP/s: ``--peak-flops``, else the table, else None (unknown)."""
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    return name, override or next((flops for key, flops in PEAK_FLOPS if key.lower() in name.lower()), None)


def report(args: argparse.Namespace, results: list[dict[str, Any]], gpu: str, peak: float | None) -> None:
    """One line per trainer, the two ratios, then one JSON line with every number (the last line printed)."""
    mem = "peak GPU memory" if gpu != "cpu" else "peak RSS"
    print(f"model: {results[0]['total'] / 1e9:.3f}B parameters, {results[0]['n'] / 1e9:.3f}B in matrix multiplies; "
          + ", ".join(f"{r['trainable']:,} trainable ({r['name']})" for r in results))
    for r in results:
        mfu = f"{r['mfu']:.1%} (4N: {r['mfu_4n']:.1%})" if r["mfu"] is not None else "unknown"
        print(f"{r['name']:9s} tokens/s {r['tokens_per_s']:12,.0f} | step time {r['step_ms']:9.1f} ms | {mem} "
              f"{r['peak_mib']:10,.0f} MiB | MFU {mfu} | mean train loss {r['loss']:.4f}")
    out: dict[str, Any] = {"device": gpu, "dtype": "float32" if gpu == "cpu" else "bfloat16", "peak_flops": peak,
                           "params": results[0]["total"], "params_matmul": results[0]["n"],
                           "memory_kind": "peak_rss" if gpu == "cpu" else "gpu_max_allocated",
                           **{k: v for k, v in vars(args).items() if k not in ("device", "only", "peak_flops")}}
    out.update({f"{r['name']}_{k}": v for r in results for k, v in r.items() if k not in ("name", "n", "total")})
    if len(results) == 2:
        a, t = results
        out["ratio_tokens_per_s"] = a["tokens_per_s"] / t["tokens_per_s"]
        out["ratio_peak_memory"] = a["peak_mib"] / t["peak_mib"]
        print(f"ratio adaptrail / Trainer tokens/s: {out['ratio_tokens_per_s']:.2f}x")
        print(f"ratio adaptrail / Trainer {mem}: {out['ratio_peak_memory']:.2f}x")
    out["forbidden_modules_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN
                                             and sys.modules[m] is not None)
    print(json.dumps(out, sort_keys=True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny fp32 config for the CPU smoke test")
    ap.add_argument("--steps", type=int, default=30, help="timed optimizer steps per trainer")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; --tiny: 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 16; --tiny: 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 512; --tiny: 32)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank (adaptrail's default 8; alpha = 2r)")
    ap.add_argument("--targets", default="all-linear", help="comma-separated LoRA target modules")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--peak-flops", type=float, default=None, help="device peak FLOP/s for MFU (default: table)")
    ap.add_argument("--only", choices=["adaptrail", "trainer"], default=None, help="run one trainer only")
    args = ap.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    args.batch_size = args.batch_size or (4 if args.tiny else 16)
    args.seq_len = args.seq_len or (32 if args.tiny else 512)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be at least 1")  # the clock starts at the end of the last warm-up step
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        adaptrail_api()
    except ImportError as err:  # e.g. pydantic, which tasks.core.config imports, missing on the GPU machine
        fail(f"adaptrail's training code cannot be imported ({err}); tasks.core.config needs pydantic "
             "(pydantic-core, annotated-types, typing-inspection) and pyyaml", 3)
    device = choose_device(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gpu, peak = device_peak(device, args.peak_flops)
    data = synthetic_rows((args.warmup + args.steps) * args.batch_size, args.seq_len,
                          model_config(args.tiny).vocab_size, args.seed)
    print(f"device {gpu} | peak {f'{peak / 1e12:,.0f} TFLOP/s' if peak else 'unknown'} | {str(dtype)[6:]} weights | "
          f"batch {args.batch_size} x {args.seq_len} tokens | {args.warmup} warm-up + {args.steps} timed steps | "
          f"LoRA r={args.lora_r} on {','.join(args.targets)}", flush=True)
    runs = {"adaptrail": run_adaptrail, "trainer": run_trainer}
    results = [measure(name, run, args, data, device, dtype, peak) for name, run in runs.items()
               if args.only in (None, name)]
    report(args, results, gpu, peak)


if __name__ == "__main__":
    main()
