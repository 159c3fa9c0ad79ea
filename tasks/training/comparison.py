"""Compare PEFT methods on the same split and budget: one row per method, a table, a plot and a recommendation.

The rows are measured by the comparison flow (``flows/compare_methods.py``); everything here is plain data in,
plain data out, so the rule that picks a method can be read and tested on its own.
"""

from __future__ import annotations

import csv
import ctypes
import gc
import io
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator
from contextlib import contextmanager

COLUMNS: list[tuple[str, str]] = [
    ("method", "method"), ("test_primary", "test {metric}"), ("test_accuracy", "test accuracy"),
    ("trainable_params", "trainable params"), ("trainable_fraction", "% of base"),
    ("adapter_bytes", "adapter on disk"), ("wall_seconds", "wall time (s)"), ("tokens_per_second", "tokens/s"),
    ("peak_memory_mib", "peak train memory (MiB)"), ("cost", "est. cost ({currency})"),
]


@dataclass
class MethodResult:
    """What one method measured on the shared split and budget (one MLflow child run)."""

    method: str  # label as tagged, e.g. lora, lora+dora, bottleneck:pfeiffer, full
    run_id: str
    test_primary: float
    test_accuracy: float
    trainable_params: int
    base_params: int
    adapter_bytes: int
    wall_seconds: float
    tokens_per_second: float
    peak_memory_mib: float
    cost: float
    adapter_digest: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.base_params if self.base_params else 0.0

    def row(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "extra"}, "trainable_fraction": self.trainable_fraction}


@dataclass
class Recommendation:
    method: str
    rule: str
    reason: str
    eligible: list[str]


def recommend(results: list[MethodResult], metric: str, tolerance: float, prefer: str) -> Recommendation:
    """Among the methods within ``tolerance`` of the best test ``metric``, take the one smallest in ``prefer``.

    ``prefer`` is ``adapter_bytes``, ``trainable_params``, ``wall_seconds``, ``cost`` or ``peak_memory_mib``;
    ties go to the better metric, then to the name (stable).
    """
    if not results:
        raise ValueError("no method results to compare")
    best = max(r.test_primary for r in results)
    eligible = [r for r in results if r.test_primary >= best - tolerance]
    chosen = min(eligible, key=lambda r: (getattr(r, prefer), -r.test_primary, r.method))
    rule = (f"among the methods whose test {metric} is within {tolerance:g} of the best ({best:.4f}), "
            f"choose the one with the smallest {prefer.replace('_', ' ')}")
    reason = (f"{chosen.method}: test {metric} {chosen.test_primary:.4f}, {prefer.replace('_', ' ')} "
              f"{_fmt(prefer, getattr(chosen, prefer))}; eligible: {', '.join(r.method for r in eligible)}")
    return Recommendation(chosen.method, rule, reason, [r.method for r in eligible])


def _fmt(key: str, v: Any) -> str:
    if key == "adapter_bytes":
        return f"{v:,} B" if v < 10_000_000 else f"{v / 1e6:,.1f} MB"
    if key == "trainable_params":
        return f"{v:,}"
    if key == "trainable_fraction":
        return f"{100 * v:.3f}%"
    if key == "cost":
        return f"{v:.5f}"
    if isinstance(v, float):
        return f"{v:.4f}" if key.startswith("test") else f"{v:,.1f}"
    return str(v)


def headers(metric: str, currency: str) -> list[str]:
    return [h.format(metric=metric, currency=currency) for _, h in COLUMNS]


def table_rows(results: list[MethodResult]) -> list[list[str]]:
    return [[_fmt(k, r.row()[k]) for k, _ in COLUMNS] for r in results]


def to_markdown(results: list[MethodResult], rec: Recommendation, metric: str, currency: str,
                settings: dict[str, Any]) -> str:
    lines = ["# PEFT method comparison", "",
             "Same data split, same training budget; " + ", ".join(f"{k} {v}" for k, v in settings.items()), "",
             "| " + " | ".join(headers(metric, currency)) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    lines += ["", "## Recommendation", "", f"**{rec.method}**. Rule: {rec.rule}.", "", f"Why: {rec.reason}."]
    return "\n".join(lines) + "\n"


def to_csv(results: list[MethodResult]) -> str:
    buf = io.StringIO()
    keys = [k for k, _ in COLUMNS] + ["base_params", "run_id", "adapter_digest"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(r.row())
    return buf.getvalue()


def plot(results: list[MethodResult], metric: str, path: Path) -> Path:
    """Quality against trainable parameters (log scale), marker size ~ wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    longest = max(r.wall_seconds for r in results) or 1.0
    for r in results:
        ax.scatter(max(r.trainable_params, 1), r.test_primary, s=60 + 400 * r.wall_seconds / longest, alpha=0.6)
        ax.annotate(r.method, (max(r.trainable_params, 1), r.test_primary), textcoords="offset points",
                    xytext=(6, 6), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("PEFT methods: quality vs trainable parameters (marker area ~ wall time)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS so the next measurement starts from what is really in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextmanager
def peak_memory() -> Iterator[dict[str, float]]:
    """Peak resident memory of this process while the block runs, above the level when it started (MiB).

    Sampled every 20 ms by a thread (``ru_maxrss`` is the whole process's lifetime peak, useless when several
    methods train one after another in one worker).
    """
    import psutil

    _release_freed_memory()
    proc = psutil.Process()
    start = proc.memory_info().rss
    out = {"start_mib": start / 2**20, "peak_mib": start / 2**20, "growth_mib": 0.0}
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        out.update(peak_mib=peak[0] / 2**20, growth_mib=(peak[0] - start) / 2**20)
