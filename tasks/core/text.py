"""Text that came from data, configs or people, made safe where it is shown: Markdown (reports, the Prefect review
form, the MLflow description) and CSV cells (spreadsheets, where ``=HYPERLINK(...)`` would run as a formula)."""

from __future__ import annotations

import re
from typing import Any

# Characters that make Markdown: emphasis, code, links and images, HTML, table cells, headings, escapes.
_MD_ACTIVE = re.compile(r"([\\`*_\[\]<>|#!~])")
_CSV_ACTIVE = ("=", "+", "-", "@", "\t", "\r", "\n")


def md(value: Any, limit: int | None = None) -> str:
    """``value`` as literal Markdown text on one line: every active character escaped, whitespace collapsed."""
    text = " ".join(str(value).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return _MD_ACTIVE.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """``value`` as an inline code span that no backtick inside it can close early."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one starting with ``= + - @``, a tab or a line break gets a leading
    apostrophe (OWASP's advice against formula injection). Numbers and booleans stay as they are."""
    if isinstance(value, str) and value.startswith(_CSV_ACTIVE) and not _is_number(value):
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
