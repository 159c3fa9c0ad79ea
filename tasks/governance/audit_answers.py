"""The audit's answers to the questions an auditor asks of any model registry, computed from the report's data (the
ledger's record, the re-hashed adapters, the signature checks), so the report answers them for this registry:

what exists; what is in production per model; who approved what, when and why; on what evidence; from which data
and base; which overrides and who confirmed them; which reviews are overdue; is what runs byte-identical to what was
approved. Also: the version's adapter card, copied beside the report so it reads without MLflow.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tasks.core.names import ApprovalStatus

QUESTIONS = ("What exists?", "What is in production, per model?", "Who approved what, when and why?",
             "On what evidence?", "From which data and base?", "Which overrides, and who confirmed them?",
             "Which reviews are overdue or due soon?", "Is what runs byte-identical to what was approved?")
CARDS_DIR = "cards"
_APPROVING = ("approved", "overridden", "reviewed")


def _short(digest: str, n: int = 12) -> str:
    return digest[:n] + "…" if digest and len(digest) > n else (digest or "not recorded")


def _ref(v: dict[str, Any]) -> str:
    return f"{v['model']} v{v['version']}"


def _headline(v: dict[str, Any]) -> str:
    m = v.get("metrics") or {}
    parts = [f"{k.removeprefix('test_')} {m[k]:.4f}" for k in ("test_macro_f1", "test_exact_match") if
             m.get(k) is not None]
    g = v.get("group_metrics") or {}
    parts += [f"{k.removeprefix('bias.')} {val:.3f}" for k, val in g.items()
              if k in ("bias.accuracy_gap", "bias.disparate_impact_ratio", "bias.equalized_odds_difference")]
    return ", ".join(parts) or "no metrics recorded"


def runs_as_approved(v: dict[str, Any], chain_ok: bool) -> tuple[bool, list[str]]:
    """Whether the version's stored bytes are what its registration recorded and the approval signed: the adapter
    re-hashes to the ledger's digest, its model-signing bundle verifies, the ledger chain holds and MLflow agrees.
    Returns (yes?, the reasons it is not, or what was checked when it is)."""
    why = [*(f"adapter: {p}" for p in v.get("integrity") or [])]
    ms = v.get("model_signing") or {}
    if ms and not ms.get("ok"):
        why.append(f"signature: {ms.get('detail', 'does not verify')}")
    if not ms:
        why.append("signature: not checked by this audit")
    if not chain_ok:
        why.append("the ledger chain does not verify")
    why += [f"MLflow disagrees with the ledger: {d}" for d in v.get("disagreements") or []]
    if why:
        return False, why
    signed = ("no model-signing bundle (registered before bundles); the digest its signed registration recorded "
              "matches" if ms.get("legacy") else "its model-signing bundle verifies")
    return True, [f"adapter re-hashed to the registered digest, {signed}, the ledger chain holds, MLflow agrees"]


#: Ledger events that are not decisions: monitoring results and reproductions are shown under each version instead.
_NOT_DECIDED = ("registered", "gate_failed", "monitored", "reproduced")


def answers(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per question: ``question``, a one-line ``answer`` and the ``details`` lines behind it."""
    versions, chain_ok = data["versions"], bool(data["chain"].get("ok"))
    champions = [v for v in versions if v["champion"]]
    models = sorted({v["model"] for v in versions})
    out: list[dict[str, Any]] = []

    def add(answer: str, details: list[str]) -> None:
        out.append({"question": QUESTIONS[len(out)], "answer": answer, "details": details})

    counts = Counter(v["status"] for v in versions)
    add(f"{len(versions)} versions of {len(models)} models: "
        + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"),
        [f"{m}: " + ", ".join(f"v{v['version']} {v['status']}" for v in versions if v["model"] == m) for m in models])
    add(f"{len(champions)} of {len(models)} models have a champion",
        [f"{m}: " + (", ".join(f"v{v['version']} ({v['status']})" for v in champions if v["model"] == m)
                     or "no champion") for m in models])
    decided = [(v, d) for v in versions for d in v["decisions"] if d["action"] not in _NOT_DECIDED]
    add(f"{sum(1 for _, d in decided if d['action'] in _APPROVING)} approvals and "
        f"{sum(1 for _, d in decided if d['action'] not in _APPROVING)} other decisions, each a signed ledger event",
        [f"{_ref(v)}: {d['action']} by {' and '.join(d['approvers'])} at {d['at'][:19]} (seq {d['seq']}): "
         f"{d['reason']}" for v, d in decided])
    in_use = champions or [v for v in versions if v["status"] == ApprovalStatus.APPROVED]
    add("gates, metrics and the adapter card of each version in use" if in_use else "no version is in use",
        [f"{_ref(v)}: gates " + ", ".join(f"{g} {o}" for g, o in v["gates"].items()) + f"; {_headline(v)}; card "
         + ((v.get("card") or {}).get("file") or (v.get("card") or {}).get("artifact") or "none (registered "
            "before cards)") for v in in_use])
    lin = lambda v, k: (v.get("lineage") or {}).get(f"adaptrail.lineage.{k}", "")  # noqa: E731
    missing = [v for v in versions if v.get("missing_lineage")]
    add("every version's dataset and base are recorded" if not missing else
        f"{len(missing)} versions lack lineage ({', '.join(_ref(v) for v in missing)})",
        [f"{_ref(v)}: data {_short(lin(v, 'dataset.digest'))}; base {lin(v, 'base_model') or '?'} @ "
         f"{lin(v, 'base_model.revision') or '?'} ({_short(lin(v, 'base_model.digest'))}); code "
         f"{lin(v, 'code.version') or '?'}" for v in (in_use or versions)])
    # an override is two signed events: ``overridden`` by the first approver, then the second's approval confirming it
    confirmations = {(v["model"], v["version"], d["confirms"]): d for v in versions for d in v["decisions"]
                     if d.get("confirms") is not None}
    overrides = [(v, d, confirmations.get((v["model"], v["version"], d["seq"]))) for v in versions
                 for d in v["decisions"] if d["action"] == "overridden"]
    pending = [(v, d) for v, d, second in overrides if second is None]
    add(f"{len(overrides) - len(pending)} confirmed overrides" + (f"; {len(pending)} awaiting a second approver"
                                                                  if pending else ""),
        [f"{_ref(v)}: gates {', '.join(d['failed_gates']) or '?'} failed; overridden by {d['actor']} at "
         f"{d['at'][:19]} (seq {d['seq']}), confirmed by {second['actor']} at {second['at'][:19]} (seq "
         f"{second['seq']}): {d['reason']}" if second else
         f"{_ref(v)}: override by {d['actor']} at {d['at'][:19]} (seq {d['seq']}) awaits a second approver"
         for v, d, second in overrides])
    due = [f for f in data["findings"] if f["code"] in ("champion-expired", "expired", "review-due-soon",
                                                         "review-overdue")]
    expired = [v for v in versions if v["status"] == ApprovalStatus.EXPIRED]
    add(f"{len(expired)} expired, {sum(1 for f in due if f['code'] == 'review-due-soon')} due soon",
        [f"{_ref(v)}: expired (review was due {v['review_due'] or '?'})"
         + (" — expired by this audit" if v.get("expired_by_audit") else "") for v in expired]
        + [f"{f['model']} v{f['version']}: {f['message']}" for f in due if f["code"] == "review-due-soon"])
    checks = [(v, *runs_as_approved(v, chain_ok)) for v in champions]
    bad = [v for v, ok, _ in checks if not ok]
    add(("no champion to check" if not champions else "yes, for every champion" if not bad else
         f"NO for {', '.join(_ref(v) for v in bad)}"),
        [f"{_ref(v)}: " + "; ".join(why) for v, ok, why in checks])
    return out


def copy_cards(versions: list[Any], out_dir: Path, download) -> None:
    """Copy each version's adapter card HTML to ``out_dir/cards/`` (so the report reads without MLflow) and record
    the copy's relative path and sha256 on the record's ``card``; ``download(record, dst_dir) -> Path``."""
    for rec in versions:
        if not (rec.card or {}).get("artifact"):
            continue
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{rec.model}-v{rec.version}") + ".html"
        dst = out_dir / CARDS_DIR / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="adaptrail-card-") as tmp:
            got = Path(download(rec, tmp))
            dst.write_bytes(got.read_bytes())
        rec.card = {**rec.card, "file": f"{CARDS_DIR}/{name}",
                    "sha256": hashlib.sha256(dst.read_bytes()).hexdigest()}
