"""Find personal data in texts: e-mail addresses, phone numbers, payment-card numbers.

Each finder returns the first match in a text, masked, or None. The validation suite turns these into
derived columns and lets Great Expectations judge how many texts may carry them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 10-15 digits, optionally led by + or (, separated by at most two of space ( ) . - ; digit runs glued to
# words count ("call08452810075"), and the run must be whole: no digit right before or after it.
PHONE = re.compile(r"(?<!\d)(?<!\d[\s().-])(?:\+|\()?(?:\d[\s().-]{0,2}){9,14}\d(?![\s().-]{0,2}\d)")
# 13-19 digits with optional single spaces or dashes between them (grouped like 4111 1111 1111 1111).
CARD = re.compile(r"(?<!\d)(?<!\d[ -])(?:\d[ -]?){12,18}\d(?![ -]?\d)")
_NON_DIGIT = re.compile(r"\D")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment-card number satisfies (cuts false positives on long numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_digits(s: str, keep_head: int, keep_tail: int) -> str:
    """Replace the digits of ``s`` by '*', keeping the first ``keep_head`` and last ``keep_tail`` digits."""
    n = sum(c.isdigit() for c in s)
    out, seen = [], 0
    for c in s:
        if c.isdigit():
            seen += 1
            c = c if seen <= keep_head or seen > n - keep_tail else "*"
        out.append(c)
    return "".join(out)


def find_email(text: str) -> str | None:
    m = EMAIL.search(text)
    if m is None:
        return None
    local, domain = m.group().split("@", 1)
    return f"{local[0]}***@{domain}"


def find_phone(text: str) -> str | None:
    m = PHONE.search(text)
    return _mask_digits(m.group(), keep_head=4, keep_tail=2) if m else None


def find_card(text: str) -> str | None:
    for m in CARD.finditer(text):
        if luhn_valid(_NON_DIGIT.sub("", m.group())):
            return _mask_digits(m.group(), keep_head=0, keep_tail=4)
    return None


#: PII kind (as named in ``gates.validation.pii_checks``) -> finder.
FINDERS: dict[str, Callable[[str], str | None]] = {"email": find_email, "phone": find_phone, "card": find_card}


_DIGITS = re.compile(r"\d")


def redact(text: str, limit: int = 80) -> str:
    """A text as a report may show it: e-mail addresses, phone and card numbers replaced by a placeholder, every
    other digit by '#', cut to ``limit`` characters."""
    out = EMAIL.sub("[email]", str(text))
    out = CARD.sub("[number]", PHONE.sub("[phone]", out))
    out = _DIGITS.sub("#", out)
    return out if len(out) <= limit else out[: limit - 1] + "…"
