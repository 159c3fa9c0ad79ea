"""Gates are data: each returns a typed decision record that is logged and tagged the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tasks.core.names import GateOutcome
from tasks.core.text import md


@dataclass
class Check:
    """One rule of a gate: what was measured, against what, and whether it held."""

    name: str
    passed: bool
    value: Any = None
    threshold: Any = None
    detail: str = ""
    judged: bool = True  # False: reported only (e.g. a group below the minimum size)


@dataclass
class GateDecision:
    gate: str  # "validation" | "bias" | "regression"
    outcome: GateOutcome
    reason: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checks(
        cls, gate: str, checks: list[Check], details: dict[str, Any] | None = None, passed_reason: str = ""
    ) -> "GateDecision":
        failed = [c for c in checks if c.judged and not c.passed]
        if failed:
            reason = "; ".join(f"{c.name}: {c.detail or f'{c.value} vs {c.threshold}'}" for c in failed)
            outcome = GateOutcome.FAILED
        else:
            reason = passed_reason or f"all {sum(c.judged for c in checks)} checks passed"
            outcome = GateOutcome.PASSED
        return cls(gate=gate, outcome=outcome, reason=reason, checks=checks, details=details or {})

    def with_checks(self, extra: list[Check]) -> "GateDecision":
        """The same gate judged again with ``extra`` checks added (a skipped gate stays skipped)."""
        if not extra or self.outcome == GateOutcome.SKIPPED:
            return self
        return GateDecision.from_checks(self.gate, [*self.checks, *extra], details=self.details)

    @classmethod
    def skipped(cls, gate: str, reason: str) -> "GateDecision":
        return cls(gate=gate, outcome=GateOutcome.SKIPPED, reason=reason)

    @property
    def failed(self) -> bool:
        return self.outcome == GateOutcome.FAILED

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if c.judged and not c.passed]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcome"] = str(self.outcome)
        return d

    def to_markdown(self) -> str:
        lines = [f"## Gate `{self.gate}`: **{self.outcome}**", "", md(self.reason), ""]
        if self.checks:
            lines += ["| check | result | value | threshold | detail |", "|---|---|---|---|---|"]
            for c in self.checks:
                result = ("pass" if c.passed else "FAIL") if c.judged else "reported"
                lines.append(f"| {md(c.name)} | {result} | {_fmt(c.value)} | {_fmt(c.threshold)} | {md(c.detail)} |")
        return "\n".join(lines) + "\n"


def unloadable_champion_checks(notes: list[str]) -> list[Check]:
    """A champion that could not be loaded fails the comparison with it: a gate never passes because the thing
    it compares against was missing (revoke or repair the champion, then run again)."""
    return [Check(name="champion available", passed=False, judged=True,
                  detail=f"{note}; the comparison with the champion could not be made") for note in notes]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else md(v)
