"""The example data set adaptrail writes itself: synthetic customer-support tickets routed to teams.

Texts are composed from templates and slots (greeting, request, context, people, tone, sign-off) in four
regional Englishes, so the bias gate has a group attribute whose spelling and vocabulary really differ, and
some mention people (relatives, first names of varied genders and origins) for the counterfactual swaps.
Some requests fit two teams, some are terse and name only a rare topic, key phrases are reworded, and ~3% of
labels are flipped: a small model lands near 0.9 macro-F1, not 1.0.
Everything is drawn from one ``random.Random(seed)``: the same (rows, seed) gives the same CSV bytes.
"""

from __future__ import annotations

import argparse
import csv
import numbers
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tasks.data.splits import normalize_text
from tasks.core.errors import InputError
from tasks.data.example_tables import (
    _AMBIGUOUS,
    _APP_AREAS,
    _COLOUR_NAMES,
    _CONTEXT_SENTENCES,
    _DAYS,
    _DEVICES,
    _ERRORS,
    _MONTHS,
    _NAMES,
    _PARAPHRASES,
    _PEOPLE,
    _PEOPLE_SENTENCES,
    _PLANS,
    _PRODUCTS,
    _PROMOS,
    _REGION_WORDS,
    _RELATIVE_DAYS,
    _SIZES,
    _SMART,
    _SUBJECTS,
    _TAILS,
    _TEAM_INTENTS,
    _TERSE_FRAMES,
    _TIMES,
    _TOPICS,
    _VERBS,
)

LABELS: list[str] = ["billing", "technical", "account", "shipping", "returns"]
GROUPS: list[str] = ["en-US", "en-GB", "en-IN", "en-AU"]
COLUMNS: list[str] = ["ticket_id", "text", "team", "region"]
TEAM_SHARES: dict[str, float] = {"billing": 0.24, "technical": 0.22, "account": 0.18, "shipping": 0.20,
                                 "returns": 0.16}
REGION_SHARES: dict[str, float] = {"en-US": 0.40, "en-GB": 0.30, "en-IN": 0.20, "en-AU": 0.10}
LABEL_NOISE = 0.03     # share of rows whose team is flipped to another team
AMBIGUOUS_SHARE = 0.09  # share of rows whose request fits more than one team
TERSE_SHARE = 0.12     # share of rows that only name a topic ("Question about my VAT receipt.")
PARAPHRASE_RATE = 0.35  # chance that a key phrase of a request is said another way
TYPO_RATE = 0.1        # chance of a typo; repeated, so some tickets have two or more
MIN_WORDS, MAX_WORDS = 8, 60
MIN_ROWS, MAX_ROWS = 20, 100_000

def _money(rng: random.Random, region: str) -> str:
    """A price in the region's currency and usual notation."""
    dollars = rng.choice([9.99, 14.5, 19.99, 24.95, 29.99, 39, 49.99, 59.95, 79, 89.99, 120, 149.99, 249, 399])
    if region == "en-US":
        return f"${dollars:,.2f}"
    if region == "en-GB":
        return f"£{dollars * 0.8:,.2f}"
    if region == "en-IN":
        rupees = int(dollars * 80 // 10 * 10 - 1)
        return rng.choice(["₹", "Rs. ", "INR "]) + f"{rupees:,}"
    return rng.choice(["A${:,.2f}", "${:,.2f} AUD", "${:,.2f}"]).format(dollars * 1.5)


def _date(rng: random.Random, region: str) -> str:
    """A recent day with its preposition ("on 14 March", "yesterday"), written the way the region writes it."""
    if rng.random() < 0.4:
        return rng.choice(_RELATIVE_DAYS)
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    if region == "en-US":
        return "on " + rng.choice([f"{_MONTHS[month - 1]} {day}", f"{month}/{day}"])
    if region == "en-IN":
        ordinal = f"{day}th" if day not in (1, 2, 3, 21, 22, 23) else str(day)
        return "on " + rng.choice([f"{ordinal} {_MONTHS[month - 1]}", f"{day:02d}/{month:02d}"])
    return "on " + rng.choice([f"{day} {_MONTHS[month - 1]}", f"{day}/{month}"])


# --- slots shared by every region ---------------------------------------------------------------------------

_PARAPHRASE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p, _ in
                                                    sorted(_PARAPHRASES, key=lambda x: -len(x[0]))) + r")(?![\w-])")
_PARAPHRASE_ALTS = dict(_PARAPHRASES)

_SLOT = re.compile(r"\{(\w+)\}")
_DIGIT_CHAIN = re.compile(r"\d(?:[\s().,/:+-]{0,2}\d)*")
_WORD = re.compile(r"[a-z]{5,}")


# --- composition --------------------------------------------------------------------------------------------

def _fill(template: str, rng: random.Random, region: str, ctx: dict[str, str]) -> str:
    """Replace each {slot}; a capitalised slot name capitalises its value. Per-ticket values live in ``ctx``."""
    words = _REGION_WORDS[region]

    def number(key: str) -> str:  # one order number per ticket, however it is written
        return ctx.setdefault(key, str(rng.randint(10000, 99999)))

    makers: dict[str, Callable[[], str]] = {
        "ref": lambda: f"ORD-{number('ordernum')}",
        "order": lambda: rng.choice(["ORD-{}", "order ORD-{}", "order #{}"]).format(number("ordernum")),
        "amount": lambda: _money(rng, region), "amount2": lambda: _money(rng, region),
        "date": lambda: _date(rng, region), "product": lambda: rng.choice(_PRODUCTS),
        "smart": lambda: rng.choice(_SMART), "device": lambda: rng.choice(_DEVICES),
        "app_area": lambda: rng.choice(_APP_AREAS), "plan": lambda: rng.choice(_PLANS),
        "promo": lambda: rng.choice(_PROMOS), "errcode": lambda: rng.choice(_ERRORS),
        "days": lambda: rng.choice(_DAYS + words["fortnight"]), "size": lambda: rng.choice(_SIZES),
        "colour_name": lambda: rng.choice(_COLOUR_NAMES), "years": lambda: str(rng.randint(2, 12)),
    }

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        key = name.lower()
        if key not in ctx:
            if key in words:
                ctx[key] = rng.choice(words[key])
            elif key in makers:
                ctx[key] = makers[key]()
            else:
                raise KeyError(f"unknown slot {{{name}}} in template {template!r}")
        v = ctx[key]
        return v[:1].upper() + v[1:] if name[:1].isupper() else v

    return _SLOT.sub(value, template)


def _pick_person(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.55:
        who, pron, _ = rng.choice(_PEOPLE)
    else:
        who, pron = rng.choice(_NAMES)
    return {"person": who, "pron": pron}


def _add_typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters in one lowercase word of 5+ letters (names and codes stay intact)."""
    spans = [m.span() for m in _WORD.finditer(text)
             if (m.start() == 0 or not text[m.start() - 1].isalnum()) and
             (m.end() == len(text) or not text[m.end()].isalnum())]
    if not spans:
        return text
    start, end = rng.choice(spans)
    i = rng.randint(start + 1, end - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _paraphrase(template: str, rng: random.Random) -> str:
    """Say some of the request's key phrases another way (see ``_PARAPHRASES``)."""
    def alt(m: re.Match[str]) -> str:
        return rng.choice(_PARAPHRASE_ALTS[m.group(1)]) if rng.random() < PARAPHRASE_RATE else m.group(1)

    return _PARAPHRASE.sub(alt, template)


def _after_greeting(template: str, rng: random.Random) -> str:
    """"Hi, the app..." more often than "Hi, The app..."; "I" and slots (courier names) keep their capital."""
    first = template.split(" ", 1)[0]
    if first[:1].isupper() and first[1:2].islower() and not first.startswith("I'") and rng.random() < 0.7:
        return template[0].lower() + template[1:]
    return template


def _compose(team: str, region: str, rng: random.Random) -> str:
    """One ticket of ``team`` written in ``region``'s English."""
    words = _REGION_WORDS[region]
    ctx: dict[str, str] = {}
    fitting = [templates for templates, teams in _AMBIGUOUS if team in teams]
    kind = rng.random()
    if fitting and kind < AMBIGUOUS_SHARE:
        request = [rng.choice(rng.choice(fitting))]
    elif kind < AMBIGUOUS_SHARE + TERSE_SHARE:
        ctx["topic"] = rng.choice(_TOPICS[team])
        request = [rng.choice(_TERSE_FRAMES)]
    else:
        intent = rng.choice(_TEAM_INTENTS[team])
        request = rng.sample(intent, 2) if rng.random() < 0.2 else [rng.choice(intent)]
    request = [_paraphrase(r, rng) for r in request]
    extras: list[str] = []
    if rng.random() < 0.35:
        extras.append(rng.choice(_CONTEXT_SENTENCES))
    if rng.random() < 0.28:
        ctx.update(_pick_person(rng))
        extras.append(rng.choice(_PEOPLE_SENTENCES))
    if rng.random() < 0.3:
        extras.append(rng.choice(words["tone"]))
    rng.shuffle(extras)
    if rng.random() < 0.6:
        request[0] = _after_greeting(request[0], rng)
        request.insert(0, rng.choice(words["greeting"]))
    parts = request + extras
    if rng.random() < 0.55:
        parts.append(rng.choice(words["signoff"]))
    if rng.random() < 0.2:
        parts.append(rng.choice(_NAMES)[0])
    text = " ".join(_fill(p, rng, region, ctx) for p in parts)
    while rng.random() < TYPO_RATE:
        text = _add_typo(text, rng)
    if rng.random() < 0.05:
        text = text.lower()
    if rng.random() < 0.08 and text.endswith("."):
        text = text[:-1]
    return text


def _acceptable(text: str) -> bool:
    """Length in words, and nothing the validation gate counts as personal data (e-mail, phone-like digits)."""
    n_words = len(text.split())
    if not MIN_WORDS <= n_words <= MAX_WORDS or "@" in text:
        return False
    return all(sum(c.isdigit() for c in m.group()) < 7 for m in _DIGIT_CHAIN.finditer(text))


def _quota(shares: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """Exactly ``round(share * n)`` of each value (largest remainder), in a shuffled order."""
    raw = {k: s * n for k, s in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    by_remainder = sorted(shares, key=lambda k: (-(raw[k] - counts[k]), list(shares).index(k)))
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    out = [k for k in shares for _ in range(counts[k])]
    rng.shuffle(out)
    return out


def generate_support_tickets(n_rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """``n_rows`` distinct tickets (columns ticket_id, text, team, region); deterministic in (n_rows, seed)."""
    if not isinstance(n_rows, numbers.Integral) or not MIN_ROWS <= n_rows <= MAX_ROWS:
        raise InputError(f"n_rows must be an integer between {MIN_ROWS} and {MAX_ROWS} (got {n_rows!r}); "
                         "use e.g. --rows 3000")
    n_rows, rng = int(n_rows), random.Random(seed)
    teams, regions = _quota(TEAM_SHARES, n_rows, rng), _quota(REGION_SHARES, n_rows, rng)
    texts: list[str] = []
    seen: dict[str, None] = {}
    for team, region in zip(teams, regions):
        for _ in range(200):
            text = _compose(team, region, rng)
            key = normalize_text(text)
            if key not in seen and _acceptable(text):
                break
        else:
            raise InputError(f"could not compose {n_rows} distinct tickets; ask for fewer rows")
        seen[key] = None
        texts.append(text)
    noisy = sorted(rng.sample(range(n_rows), round(LABEL_NOISE * n_rows)))
    for i in noisy:
        teams[i] = rng.choice([t for t in LABELS if t != teams[i]])
    width = max(5, len(str(n_rows)))
    return pd.DataFrame({"ticket_id": [f"TCK-{i + 1:0{width}d}" for i in range(n_rows)], "text": texts,
                         "team": teams, "region": regions}, columns=COLUMNS)


def write_support_tickets(path: Path, n_rows: int = 3000, seed: int = 7) -> Path:
    """Write the generated tickets as UTF-8 CSV with stable bytes (``\\n`` line ends, minimal quoting)."""
    path = Path(path)
    frame = generate_support_tickets(n_rows=n_rows, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        writer.writerows(frame[COLUMNS].itertuples(index=False, name=None))
    return path


# --- causal-LM examples: instruction pairs from the tickets, and general English for the forgetting check -------

INSTRUCTION = "Which team should handle this ticket?"
INSTRUCTION_ROWS = 600


def support_instructions(tickets: pd.DataFrame) -> pd.DataFrame:
    """Tickets as instruction pairs: prompt "Which team should handle this ticket? <text>" -> response team."""
    return pd.DataFrame({"prompt": [f"{INSTRUCTION} {t}" for t in tickets["text"]],
                         "response": list(tickets["team"]), "region": list(tickets["region"])})


def write_support_instructions(path: Path, n_rows: int = INSTRUCTION_ROWS, seed: int = 7) -> Path:
    """JSONL of :func:`support_instructions` with stable bytes (one object per line, ``\\n`` line ends)."""
    import json

    path = Path(path)
    frame = support_instructions(generate_support_tickets(n_rows=n_rows, seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        for row in frame.itertuples(index=False):
            f.write(json.dumps(row._asdict(), ensure_ascii=False) + "\n")
    return path


def general_text(n_lines: int = 300, seed: int = 5) -> list[str]:
    """Plain, ticket-unrelated English sentences (deterministic in n_lines, seed): the forgetting check's text."""
    rng = random.Random(seed)
    lines: dict[str, None] = {}
    while len(lines) < n_lines:
        lines[f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TIMES)} {rng.choice(_TAILS)}"] = None
    return list(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.data.example [--out PATH] [--rows N] [--seed S] [--instructions | --general-text]``."""
    p = argparse.ArgumentParser(prog="python -m tasks.data.example", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/support_tickets.csv", help="CSV to write")
    p.add_argument("--rows", type=int, default=3000, help="number of tickets")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--instructions", action="store_true", help="write instruction pairs (JSONL) instead")
    kind.add_argument("--general-text", action="store_true", help="write general English lines (--rows of them)")
    args = p.parse_args(argv)
    try:
        if args.instructions:
            path = write_support_instructions(Path(args.out), n_rows=args.rows, seed=args.seed)
        elif args.general_text:
            path = Path(args.out)
            path.write_text("\n".join(general_text(args.rows, args.seed)) + "\n", encoding="utf-8")
        else:
            path = write_support_tickets(Path(args.out), n_rows=args.rows, seed=args.seed)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
