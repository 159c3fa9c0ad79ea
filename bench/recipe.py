"""Benchmark: choose the default training recipe on evidence, on validation splits only.

For each data set and each candidate recipe (a set of ``--set`` overrides on top of the data set's shipped config,
which holds data settings only), trains with adaptrail's own training path (``train_adapter``: the code the flows
run) and reports the validation macro-F1 of the epoch kept, the epochs run and the training time, beside the TF-IDF +
logistic-regression baseline (the regression gate's) fitted on the same training split and scored on the same
validation split. The test splits are not read: they are for the README's final table (``adaptrail run``).

Usage::

    .venv/bin/python bench/recipe.py --data clinc150 --recipes old,new [--threads 2] [--json out.jsonl]

Data sets: ``example`` (the embedded support tickets) and ``sms_spam``, ``hatecheck``, ``clinc150`` from
``../shared/data`` (skipped with a message when absent). Recipes: see ``RECIPES``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

#: Data set -> the shipped config that trains on it (data settings only; the recipe is the default's).
DATASETS: dict[str, str] = {"example": "default.yaml", "sms_spam": "sms_spam.yaml", "hatecheck": "hatecheck.yaml",
                            "clinc150": "clinc150.yaml"}

#: Candidate recipes: overrides on top of the default recipe (whatever it is at the time of the run).
RECIPES: dict[str, list[str]] = {
    # the recipe shipped before this benchmark: LoRA r=8 on query/value with dropout, 3 epochs, last epoch kept
    "old": ["peft.target_modules=[query,value]", "peft.dropout=0.1", "training.epochs=3",
            "training.early_stopping_patience=null", "training.head_learning_rate=null",
            "training.class_weights=none", "training.max_grad_norm=null"],
    "default": [],
    # what made LoRA on every linear layer stable on SMS spam (it collapsed to one class without clipping)
    "noclip": ["training.max_grad_norm=null"],
    "lr1e-3": ["training.learning_rate=0.001"],
    "nohead": ["training.head_learning_rate=null"],
    "head5e-3": ["training.head_learning_rate=0.005"],
    "noweights": ["training.class_weights=none"],  # configs/default.yaml as it is now
    # the head at the adapter's learning rate vs its own (two epochs each, on the many-class set)
    "e2": ["training.epochs=2", "training.head_learning_rate=null"],
    "e2-head1e-2": ["training.epochs=2", "training.head_learning_rate=0.01"],
    # the candidate default, and the same without the balanced loss (what auto does on imbalanced classes)
    "cand": ["training.epochs=5", "training.head_learning_rate=0.01"],
    "cand-noweights": ["training.epochs=5", "training.head_learning_rate=0.01", "training.class_weights=none"],
}


def run(dataset: str, recipe: str, threads: int, extra: list[str], method: str | None = None) -> dict:
    from tasks.core.config_files import load_config
    from tasks.steps.compare import method_config
    from tasks.gates.baselines import evaluate_baselines, fit_baselines
    from tasks.data.splits import LABEL, TEXT, load_dataset_splits
    from tasks.training.model import resolve_base_model
    from tasks.training.recipe import TrainingJob, train_adapter

    overrides = RECIPES[recipe] + extra + [f"training.num_threads={threads}"]
    config = load_config(ROOT / "configs" / DATASETS[dataset], overrides)
    if method:  # the method as the comparison trains it: its own defaults and compare.learning_rates
        config = method_config(config, method)
    splits = load_dataset_splits(config.data)
    job = TrainingJob(config=config, base=resolve_base_model(config.model), labels=list(splits.labels),
                      dataset_digest=splits.digest)
    start = time.perf_counter()
    trained = train_adapter(job, splits.train, splits.validation, None)
    seconds = time.perf_counter() - start
    kept = trained.stats.history[trained.stats.best_epoch - 1]
    fitted = fit_baselines(list(splits.train[TEXT]), list(splits.train[LABEL]), ["tfidf_logreg"], config.training.seed)
    base = evaluate_baselines(fitted, list(splits.validation[TEXT]), list(splits.validation[LABEL]),
                              list(splits.labels))["tfidf_logreg"]
    return {"dataset": dataset, "recipe": recipe, "method": method or config.peft.method,
            "learning_rate": config.training.learning_rate, "overrides": overrides, "val_macro_f1": kept["val_macro_f1"],
            "val_accuracy": kept["val_accuracy"], "epoch_kept": trained.stats.best_epoch,
            "epochs_run": len(trained.stats.history), "train_seconds": round(seconds, 1),
            "trainable_params": trained.trainable_params, "tfidf_val_macro_f1": base["macro_f1"],
            "margin": kept["val_macro_f1"] - base["macro_f1"],
            "history": [{k: round(v, 4) for k, v in h.items()} for h in trained.stats.history]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="example", help=f"comma-separated, from {list(DATASETS)}")
    ap.add_argument("--recipes", default="old,default", help=f"comma-separated, from {list(RECIPES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="an override applied to every recipe (e.g. "
                    "training.release_memory=false)")
    ap.add_argument("--method", help="train this method as `adaptrail compare` does (its own defaults and "
                    "compare.learning_rates; change a rate with --set compare.learning_rates.METHOD=RATE)")
    ap.add_argument("--json", help="append each result as one JSON line to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("adaptrail").setLevel(logging.INFO)
    for dataset in args.data.split(","):
        if dataset != "example" and not (SHARED / dataset).is_dir():
            print(f"skip {dataset}: {SHARED / dataset} is absent (real data sets live in ../shared/data)")
            continue
        for recipe in args.recipes.split(","):
            r = run(dataset, recipe, args.threads, args.set, args.method)
            print(f"{dataset:10s} {recipe:24s} {r['method']:14s} lr {r['learning_rate']:g}  val macro-F1 {r['val_macro_f1']:.4f} (epoch {r['epoch_kept']} of "
                  f"{r['epochs_run']}, {r['train_seconds']:.0f} s)  tfidf {r['tfidf_val_macro_f1']:.4f}  "
                  f"margin {r['margin']:+.4f}", flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
