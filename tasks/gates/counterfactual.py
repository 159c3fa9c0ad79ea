"""Counterfactual identity-term swaps: replacing "he" with "she" (or a name, nationality, religion) should not
change what the model predicts. Used by the bias gate; needs only a texts -> probabilities function.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from tasks.core.config import BiasGateConfig
from tasks.core.errors import InputError
from tasks.core.metrics import wilson_interval
from tasks.gates.identity_terms import TermPairs, resolve_terms
from tasks.core.predictions import PredictFn


def _round(x: Any) -> float:
    return round(float(x), 6)


class _Swapper:
    """Whole-word, case-preserving, simultaneous swap of the terms of one category."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.lower: dict[str, str] = {}  # lowercase terms: any casing matches
        self.exact: dict[str, str] = {}  # capitalised terms: Capitalised or UPPERCASE matches
        for a, b in pairs:
            for term, other in ((a, b), (b, a)):
                if term[:1].isupper():
                    self.exact.setdefault(term, other)
                    self.exact.setdefault(term.upper(), other)
                else:
                    self.lower.setdefault(term.casefold(), other)
        alts = [f"(?i:{'|'.join(map(re.escape, sorted(self.lower, key=len, reverse=True)))})"] if self.lower else []
        alts += [re.escape(t) for t in sorted(self.exact, key=len, reverse=True)]
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)") if alts else None

    def _replace(self, m: re.Match[str]) -> str:
        word = m.group(0)
        other = self.exact.get(word) or self.lower[word.casefold()]
        if len(word) > 1 and word.isupper():
            return other.upper()
        return other[:1].upper() + other[1:] if word[:1].isupper() else other

    def swap(self, text: str) -> str:
        return self.pattern.sub(self._replace, text) if self.pattern else text


def _predict(predict_fn: PredictFn, texts: list[str], k: int) -> np.ndarray:
    proba = np.asarray(predict_fn(texts), dtype=float)
    if proba.shape != (len(texts), k):
        raise InputError(f"predict_fn returned shape {proba.shape} for {len(texts)} texts; expected "
                         f"({len(texts)}, {k}) probabilities in the model's label order")
    return proba


def _known(proba: np.ndarray, chosen: list[int], n: int, labels: list[str]) -> np.ndarray:
    known = np.asarray(proba, dtype=float)
    if known.shape != (n, len(labels)):
        raise InputError(f"the given probabilities have shape {known.shape} for {n} texts; expected ({n}, "
                         f"{len(labels)}), the model's predictions of these texts in its label order")
    return known[chosen]


def counterfactual_test(texts: list[str], predict_fn: PredictFn, labels: list[str], cfg: BiasGateConfig,
                        terms: TermPairs | None = None, proba: np.ndarray | None = None) -> dict[str, Any]:
    """Swap identity terms (one variant per text and category) and measure how predictions move.

    flip rate: share of variants whose predicted label differs; prob change: mean |p_swapped - p_original| of
    the originally predicted class. ``proba``: ``predict_fn(texts)`` where the caller already has it (the
    evaluation's predictions of the same model), so only the swapped texts are scored.
    """
    pairs = terms if terms is not None else resolve_terms(cfg.counterfactual_terms)
    swappers = {cat: _Swapper(p) for cat, p in pairs.items()}
    chosen: list[int] = []
    variants: list[tuple[int, str, str]] = []  # (position in chosen, category, swapped text)
    n_matching = 0
    for i, text in enumerate(texts):
        row = [(cat, s) for cat, sw in swappers.items() if (s := sw.swap(text)) != text]
        if not row:
            continue
        n_matching += 1
        if len(chosen) < cfg.max_counterfactual_texts:
            variants += [(len(chosen), cat, s) for cat, s in row]
            chosen.append(i)
    out: dict[str, Any] = {"categories": list(pairs), "n_texts": len(texts), "n_texts_with_terms": n_matching,
                           "n_texts_tested": len(chosen), "n_swaps": len(variants), "flip_rate": None,
                           "mean_prob_change": None, "by_category": {}, "worst_examples": []}
    if not variants:
        return out
    originals = [texts[i] for i in chosen]
    p0 = _predict(predict_fn, originals, len(labels)) if proba is None else _known(proba, chosen, len(texts), labels)
    p1 = _predict(predict_fn, [s for _, _, s in variants], len(labels))
    src = np.array([j for j, _, _ in variants])
    cls0 = p0.argmax(axis=1)[src]
    flips = p1.argmax(axis=1) != cls0
    delta = p1[np.arange(len(src)), cls0] - p0[src, cls0]
    cats = np.array([c for _, c, _ in variants], dtype=object)
    out["flip_rate"], out["mean_prob_change"] = _round(flips.mean()), _round(np.abs(delta).mean())
    out["flip_rate_ci"] = [_round(b) for b in wilson_interval(int(flips.sum()), len(flips), cfg.confidence)]
    for cat in pairs:
        m = cats == cat
        if m.any():
            out["by_category"][cat] = {"n_swaps": int(m.sum()), "flip_rate": _round(flips[m].mean()),
                                       "mean_prob_change": _round(np.abs(delta[m]).mean())}
    order = sorted(range(len(variants)), key=lambda v: (not flips[v], -abs(delta[v])))
    for v in order[: cfg.counterfactual_examples]:
        j, cat, swapped = variants[v]
        out["worst_examples"].append({
            "category": cat, "original": originals[j], "swapped": swapped, "original_label": labels[cls0[v]],
            "swapped_label": labels[int(p1[v].argmax())], "delta": _round(delta[v]), "flipped": bool(flips[v]),
        })
    return out
