"""Evaluating a causal-LM adapter: held-out response perplexity and greedy exact match, with a readable report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tasks.data.lm import PROMPT, RESPONSE
from tasks.data.splits import DatasetSplits
from tasks.training.causal_lm import encode_pairs, generate, perplexity

EXAMPLES_IN_REPORT = 20
_NON_WORD = re.compile(r"[^\w]+")


def normalize_answer(text: str) -> str:
    """Casefolded words only: punctuation becomes a space, whitespace collapses ("Re-check!" -> "re check")."""
    return _NON_WORD.sub(" ", str(text).casefold()).strip()


def generation_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """exact_match: normalised prediction equals the reference; prefix_match: it starts with it."""
    pairs = [(normalize_answer(p), normalize_answer(r)) for p, r in zip(predictions, references, strict=True)]
    n = len(pairs)
    exact = sum(p == r for p, r in pairs)
    prefix = sum(p == r or p.startswith(r + " ") for p, r in pairs)
    return {"n": n, "exact_match": exact / n if n else float("nan"), "prefix_match": prefix / n if n else float("nan")}


@dataclass
class LMEvaluation:
    """Per split: response perplexity (and exact match on test); a few test generations for the report."""

    metrics: dict[str, dict[str, Any]]
    examples: list[dict[str, str]] = field(default_factory=list)
    headline: str = "exact_match"

    def headline_metric(self) -> tuple[str, float]:
        return self.headline, float(self.metrics["test"][self.headline])

    def summary_metrics(self) -> dict[str, float]:
        return {f"{split}_{k}": float(v) for split, m in self.metrics.items() for k, v in m.items() if k != "n"}


def evaluate_lm(model, tokenizer, splits: DatasetSplits, max_length: int, max_new_tokens: int, batch_size: int
                ) -> LMEvaluation:
    """Held-out response perplexity (validation, test) and greedy exact match on the test responses."""
    pad = tokenizer.pad_token_id
    metrics: dict[str, dict[str, Any]] = {}
    for name, frame in (("validation", splits.validation), ("test", splits.test)):
        if len(frame):
            enc = encode_pairs(tokenizer, list(frame[PROMPT]), list(frame[RESPONSE]), max_length)
            metrics[name] = {"perplexity": perplexity(model, enc, pad, batch_size)}
    prompts, refs = [str(p) for p in splits.test[PROMPT]], [str(r) for r in splits.test[RESPONSE]]
    preds = generate(model, tokenizer, prompts, max_length, max_new_tokens, batch_size)
    metrics["test"].update(generation_metrics(preds, refs))
    examples = [{"prompt": p, "reference": r, "generated": g}
                for p, r, g in list(zip(prompts, refs, preds))[:EXAMPLES_IN_REPORT]]
    return LMEvaluation(metrics=metrics, examples=examples)


def evaluation_markdown(ev: LMEvaluation) -> str:
    lines = ["# Evaluation (causal LM)", "", "| split | response perplexity | exact match | prefix match |",
             "|---|---|---|---|"]
    for split, m in ev.metrics.items():
        em, pm = m.get("exact_match"), m.get("prefix_match")
        lines.append(f"| {split} | {m['perplexity']:.4g} | {'' if em is None else f'{em:.4f}'} | "
                     f"{'' if pm is None else f'{pm:.4f}'} |")
    lines += ["", "## Test generations", "", "| prompt | reference | generated |", "|---|---|---|"]
    for e in ev.examples:
        cells = [str(e[k]).replace("|", "\\|").replace("\n", " ")[:120] for k in ("prompt", "reference", "generated")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
