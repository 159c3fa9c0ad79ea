"""What ``verify`` found about one version: its checks, why loading is refused, and the refusal itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import Refused
from tasks.training.model import BaseModelRef

# How a failed check reads in a refusal.
_REASON = {"ledger": "ledger problem", "tags": "ledger problem", "adapter": "adapter digest mismatch",
           "base_model": "base mismatch", "signature": "bad signature", "approval": "",
           "model_signing": "model-signing check failed"}


@dataclass
class Check:
    name: str  # ledger | tags | approval | adapter | model_signing | base_model | signature
    ok: bool
    detail: str
    warning: bool = False  # passed, but a person should know (e.g. monitoring asked for a review; policy: warn)


@dataclass
class VerifyReport:
    ref: str
    model: str
    version: str
    checks: list[Check] = field(default_factory=list)
    base: BaseModelRef | None = None
    adapter_dir: Path | None = None  # the verified copy (only while load_verified holds it)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def warnings(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if c.ok and c.warning]

    @property
    def reason(self) -> str:
        """Why loading is refused, one clause per failed check ('' when everything passed)."""
        return "; ".join(f"{_REASON[c.name]}: {c.detail}" if _REASON[c.name] else c.detail for c in self.failures)

    def to_text(self) -> str:
        head = f"{self.model} v{self.version} ({self.ref}): " + ("verified" if self.ok else "REFUSED")
        mark = {(True, False): "ok", (True, True): "WARN"}
        return "\n".join([head, *(f"  [{mark.get((c.ok, c.warning), 'FAIL')}] {c.name}: {c.detail}"
                                   for c in self.checks)])


class LoadRefused(Refused):
    """An adapter did not pass verification; nothing was loaded."""

    def __init__(self, report: VerifyReport):
        self.report = report
        super().__init__(f"refusing to load {report.model} v{report.version}: {report.reason}")
