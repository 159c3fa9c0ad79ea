"""Benchmark: the default recipe against the TF-IDF baseline on every data set, as a user runs it.

For each data set, runs ``adaptrail run --config configs/<name>.yaml --json`` (the shipped config: data settings and
the model's name only, so training is the default recipe) in a fresh state directory, and reads back from the run:
the test macro-F1 of the registered adapter, the TF-IDF + logistic-regression baseline's test macro-F1 (the regression
gate's, fitted on the same training split), the gates, the epochs trained and kept, and the wall time of the command.
Prints one Markdown row per data set (the README's table).

Usage: ``.venv/bin/python bench/default_recipe.py [--data example,sms_spam,hatecheck,clinc150] [--home /tmp/dr]``.
Real data sets are skipped with a message where ``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CONFIGS = {"example": "default.yaml", "sms_spam": "sms_spam.yaml", "hatecheck": "hatecheck.yaml",
           "clinc150": "clinc150.yaml"}


def run(name: str, home: Path) -> dict:
    env = {**os.environ, "ADAPTRAIL_HOME": str(home / name)}
    env.pop("MLFLOW_TRACKING_URI", None)
    adaptrail = str(Path(sys.executable).parent / "adaptrail")
    subprocess.run([adaptrail, "init", "-q"], env=env, check=False, cwd=ROOT, capture_output=True)  # once per home
    command = [adaptrail, "run", "--config", f"configs/{CONFIGS[name]}", "--json"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 3):
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home / name / 'mlflow.db'}"
    c = MlflowClient(uri, registry_uri=uri)
    run_ = c.get_run(summary["run_id"])
    local = c.download_artifacts(summary["run_id"], "reports/regression.json", str(home / name / "tmp"))
    baselines = json.loads(Path(local).read_text())["details"]["baselines"]["values"]
    metrics = run_.data.metrics
    return {"data": name, "command": f"adaptrail run --config configs/{CONFIGS[name]}",
            "test_macro_f1": summary["metrics"]["test_macro_f1"], "tfidf_macro_f1": baselines["tfidf_logreg"],
            "margin": summary["metrics"]["test_macro_f1"] - baselines["tfidf_logreg"],
            "gates": summary["gates"], "status": summary["status"],
            "epochs": f"{int(metrics['epoch_kept'])} of {int(metrics['epochs_trained'])}",
            "wall_seconds": round(wall), "adapter_bytes": summary["adapter_bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=",".join(CONFIGS))
    ap.add_argument("--home", default="/tmp/adaptrail-default-recipe", help="fresh state directories go here")
    args = ap.parse_args()
    rows = []
    for name in args.data.split(","):
        if name != "example" and not (SHARED / name).is_dir():
            print(f"skip {name}: {SHARED / name} is absent (real data sets live in ../shared/data)")
            continue
        r = run(name, Path(args.home))
        print(json.dumps(r), flush=True)
        rows.append(r)
    print("\n| data set | command | test macro-F1 | TF-IDF + LR | margin | gates | epochs kept of run | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gates = "all passed" if all(v == "passed" or v == "skipped" for v in r["gates"].values()) else \
            ", ".join(f"{k} {v}" for k, v in r["gates"].items() if v == "failed")
        print(f"| {r['data']} | `{r['command']}` | {r['test_macro_f1']:.4f} | {r['tfidf_macro_f1']:.4f} | "
              f"{r['margin']:+.4f} | {gates} | {r['epochs']} | {r['wall_seconds'] // 60}m{r['wall_seconds'] % 60:02d}s |")


if __name__ == "__main__":
    main()
