"""The CLI's logging: to the live stderr, and quiet about expected errors (the CLI prints them once itself)."""

from __future__ import annotations

import logging
import sys

from tasks.core.errors import AdaptrailError


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not the stream of the first call)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("adaptrail").setLevel(logging.DEBUG if verbose else logging.INFO)
    # Great Expectations logs its temporary docs directory at INFO through Prefect's handlers; not a user's concern
    logging.getLogger("great_expectations").setLevel(logging.DEBUG if verbose else logging.WARNING)


class _ExpectedErrorFilter(logging.Filter):
    """Drops log records that carry one of adaptrail's own (expected) errors: the CLI prints that error once, as one
    block, at the end; a traceback is only for the unexpected (or with --verbose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AdaptrailError):
            return False
        text = record.getMessage()
        return not any(f"{name}:" in text or f"{name}(" in text for name in _EXPECTED)


_EXPECTED = ("InputError", "ValidationFailed", "DecisionRefused", "SignatureRefused", "LoadRefused", "Refused")


def quiet_expected_errors() -> None:
    """Install the filter on Prefect's run loggers (they keep it when Prefect reconfigures its handlers)."""
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine", "prefect.task_engine"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedErrorFilter) for f in lg.filters):
            lg.addFilter(_ExpectedErrorFilter())
