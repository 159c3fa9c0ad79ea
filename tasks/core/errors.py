"""Error types and the CLI exit codes they map to (DESIGN.md: Interfaces)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_AUDIT_FINDINGS = 4
EXIT_REFUSED = 5


class AdaptrailError(Exception):
    """Base class; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_ERROR


class InputError(AdaptrailError):
    """Bad input or config: nothing is registered. The message names the problem and the fix."""

    exit_code = EXIT_BAD_INPUT


class Refused(InputError):
    """Well-formed, but refused: not approved, expired, a digest or signature mismatch, a rule broken. Nothing was
    written or loaded. Its own exit code, so scripts tell a refusal from a typo."""

    exit_code = EXIT_REFUSED


class ValidationFailed(InputError):
    """The data validation gate failed; the flow stops before training."""

    def __init__(self, failures: list[str], report_path: str):
        self.failures = failures
        self.report_path = report_path
        lines = "\n".join(f"  - {f}" for f in failures)
        super().__init__(
            f"data validation failed ({len(failures)} expectation(s)):\n{lines}\n"
            f"report: {report_path}\n"
            "fix the data (or the thresholds under gates.validation in the config) and run again"
        )
