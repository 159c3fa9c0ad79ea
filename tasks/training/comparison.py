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
    ("method", "method"), ("gates_passed", "gates"), ("pareto", "Pareto"), ("test_primary", "test {metric}"),
    ("test_accuracy", "test accuracy"),
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
    gates: dict[str, str] = field(default_factory=dict)  # gate -> outcome, measured on this method's candidate
    pareto: bool = False  # on the front of test metric vs adapter size (set by ``mark_pareto``)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.base_params if self.base_params else 0.0

    @property
    def passed(self) -> bool:
        """No gate its candidate went through failed (the bias and regression gates; a skipped gate is no failure)."""
        return all(outcome != "failed" for outcome in self.gates.values())

    @property
    def gates_passed(self) -> str:
        failed = [g for g, outcome in self.gates.items() if outcome == "failed"]
        return ("failed: " + ", ".join(failed)) if failed else "passed" if self.gates else "not run"

    def row(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "extra"}, "trainable_fraction": self.trainable_fraction,
                "gates_passed": self.gates_passed}


@dataclass
class Recommendation:
    method: str | None  # None: no method's candidate passed the gates
    rule: str
    reason: str
    eligible: list[str]


def dominated(r: MethodResult, others: list[MethodResult], cost: str) -> bool:
    """Another method is at least as good in the metric and at least as cheap in ``cost``, and better in one."""
    return any(o is not r and o.test_primary >= r.test_primary and getattr(o, cost) <= getattr(r, cost)
               and (o.test_primary > r.test_primary or getattr(o, cost) < getattr(r, cost)) for o in others)


def mark_pareto(results: list[MethodResult], cost: str = "adapter_bytes") -> list[MethodResult]:
    """Flag the methods on the Pareto front of test metric (higher) vs ``cost`` (lower)."""
    for r in results:
        r.pareto = not dominated(r, results, cost)
    return results


def recommend(results: list[MethodResult], metric: str, tolerance: float, prefer: str) -> Recommendation:
    """Among the methods whose candidate passed the gates, and within ``tolerance`` of the best of those in test
    ``metric``, take the one smallest in ``prefer``.

    ``prefer`` is ``adapter_bytes``, ``trainable_params``, ``wall_seconds``, ``cost`` or ``peak_memory_mib``;
    ties go to the better metric, then to the name (stable). A method whose gates failed is never recommended,
    however good its metric: the comparison ends in something that can be registered, or says that nothing can.
    """
    if not results:
        raise ValueError("no method results to compare")
    passing = [r for r in results if r.passed]
    failed = [f"{r.method} ({r.gates_passed})" for r in results if not r.passed]
    if not passing:
        return Recommendation(None, "no method's candidate passed the gates", "failed: " + "; ".join(failed), [])
    best = max(r.test_primary for r in passing)
    eligible = [r for r in passing if r.test_primary >= best - tolerance]
    chosen = min(eligible, key=lambda r: (getattr(r, prefer), -r.test_primary, r.method))
    rule = (f"among the methods whose candidate passed the gates and whose test {metric} is within {tolerance:g} of "
            f"the best of those ({best:.4f}), choose the one with the smallest {prefer.replace('_', ' ')}")
    reason = (f"{chosen.method}: test {metric} {chosen.test_primary:.4f}, {prefer.replace('_', ' ')} "
              f"{_fmt(prefer, getattr(chosen, prefer))}; eligible: {', '.join(r.method for r in eligible)}"
              + (f"; not eligible, gates failed: {'; '.join(failed)}" if failed else ""))
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
    if key == "pareto":
        return "yes" if v else ""
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
    lines += ["", "Pareto: on the front of test metric vs adapter size (no other method is at least as good and at "
              "least as small); the plot also shows metric vs training time.", "", "## Recommendation", ""]
    if rec.method is None:
        lines += ["**None**: no method's candidate passed the gates, so nothing is registered.", "",
                  f"Why: {rec.reason}."]
    else:
        lines += [f"**{rec.method}**. Rule: {rec.rule}.", "", f"Why: {rec.reason}."]
    return "\n".join(lines) + "\n"


def to_csv(results: list[MethodResult]) -> str:
    buf = io.StringIO()
    keys = [k for k, _ in COLUMNS] + ["base_params", "run_id", "adapter_digest"]
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(r.row())
    return buf.getvalue()


def plot(results: list[MethodResult], metric: str, path: Path, recommended: str | None = None) -> Path:
    """The trade-off as two Pareto views: test metric against adapter size and against training time (log scales).
    The front of each is drawn; a method whose gates failed is a hollow red marker; the recommendation a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for ax, (cost, label) in zip(axes, (("adapter_bytes", "adapter on disk (bytes, log scale)"),
                                        ("wall_seconds", "training wall time (s, log scale)"))):
        front = sorted((r for r in results if not dominated(r, results, cost)), key=lambda r: getattr(r, cost))
        ax.step([max(getattr(r, cost), 1) for r in front], [r.test_primary for r in front], where="post",
                color="tab:blue", alpha=0.5, label="Pareto front")
        for r in results:
            x = max(getattr(r, cost), 1)
            style = ({"marker": "*", "s": 220, "color": "tab:green"} if r.method == recommended else
                     {"marker": "o", "s": 70, "color": "tab:blue"} if r.passed else
                     {"marker": "o", "s": 70, "facecolors": "none", "edgecolors": "tab:red"})
            ax.scatter(x, r.test_primary, zorder=3, **style)
            ax.annotate(r.method + ("" if r.passed else " (gates failed)"), (x, r.test_primary),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"PEFT methods: quality vs size and time (star: recommended{'' if recommended else ', none'}; "
                 "hollow red: gates failed)", fontsize=10)
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
