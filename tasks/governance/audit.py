"""The compliance audit: collect every registered version's evidence, then judge it into findings with a severity.

:func:`collect` reads MLflow (versions, tags, run metrics, stored adapter files) and the ledger (events, chain);
it first marks overdue approvals ``expired`` (:func:`approvals.expire_overdue` writes the ledger and the tags).
:func:`assess` is pure: records in, findings out. :func:`champion_at` answers "which version was champion of X
on date D, and who approved it?" by replaying the ledger.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

from tasks.governance import (approvals, audit_reads, checkpoints, events as prefect_events, monitoring_record,
                              registry, trust)
from tasks.governance.card_facts import card_location
from tasks.governance.audit_trust import audit_checkpoints, trust_findings, trust_summary
from tasks.core.errors import EXIT_AUDIT_FINDINGS, EXIT_OK, InputError
from tasks.governance.ledger import Ledger, LedgerEvent, format_at
from tasks.governance.ledger_view import APPROVING, decision_record
from tasks.governance.loader import adapter_problems, fetch_adapter
from tasks.governance.reproduce import last_reproduction, reproduction_findings
from tasks.governance.signed_adapter import findings as signing_findings, version_check
from tasks.core.names import (ALIAS_CHAMPION, MAX_REVIEW_PERIOD_DAYS, SEVERITIES, ApprovalStatus, GateOutcome, GATES,
                              Tag)

METRICS = ("test_macro_f1", "test_accuracy", "test_exact_match", "test_perplexity")  # classification; causal LM
LINEAGE_TAGS = (Tag.DATASET_DIGEST, Tag.BASE_MODEL, Tag.BASE_MODEL_REVISION, Tag.BASE_MODEL_DIGEST,
                Tag.CODE_VERSION, Tag.FLOW_RUN_ID)
DUE_SOON_DAYS = 30
UNRECORDED = "unrecorded"  # a version the ledger has no record of: whatever its tags claim is not evidence


@dataclass
class Finding:
    severity: str  # critical | high | medium | low
    code: str  # ledger-chain | adapter-integrity | champion-expired | failed-gate-approved | override | ...
    model: str
    version: str
    message: str


@dataclass
class VersionRecord:
    """Everything the audit knows about one registered version."""

    model: str
    version: str
    created_at: str
    status: str
    champion: bool
    run_id: str
    gates: dict[str, str]
    failed_gates: list[str]
    metrics: dict[str, float | None]
    lineage: dict[str, str]
    missing_lineage: list[str]
    review_due: str
    decisions: list[dict[str, Any]]
    integrity: list[str]  # problems found re-hashing the stored adapter ([] = intact)
    disagreements: list[str]  # tag/alias vs ledger
    expired_by_audit: bool = False
    reproduction: dict[str, Any] | None = None  # the last `adaptrail reproduce` (reproduce.last_reproduction)
    monitoring: list[dict[str, Any]] = field(default_factory=list)  # monitoring_record.history, oldest first
    model_signing: dict[str, Any] = field(default_factory=dict)  # the bundle check: ok, detail, legacy ({}: not run)
    group_metrics: dict[str, float] = field(default_factory=dict)  # the bias gate's headline numbers (bias.*)
    card: dict[str, str] = field(default_factory=dict)  # the adapter card: its artifact, and its copy by the report


@dataclass
class Audit:
    generated_at: str
    since: str | None
    until: str | None
    model: str | None
    chain: dict[str, Any]
    versions: list[VersionRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    point_in_time: dict[str, Any] | None = None
    unregistered: list[str] = field(default_factory=list)  # "model vN" the ledger records but MLflow lacks
    ledger_guards_missing: list[str] = field(default_factory=list)  # append-only triggers the database lacks
    ledger_id: str = ""  # hash of the ledger's first row
    checkpoints: dict[str, list[str]] = field(default_factory=dict)  # "critical"/"high" -> checkpoint problems
    trust: dict[str, Any] = field(default_factory=dict)  # policy, events that do not count, unsigned events

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- dates -------------------------------------------------------------------------------------------------


def parse_when(text: str | datetime | None, *, end_of_day: bool = False) -> datetime | None:
    """A CLI date (``2026-01-31``, or ISO-8601 with timezone) as UTC; a bare date means its start, or with
    ``end_of_day`` the start of the next day (so ``--until 2026-06-30`` includes that day)."""
    if text is None or text == "":
        return None
    if isinstance(text, datetime):
        if text.tzinfo is None:
            raise InputError(f"time {text!r} has no timezone; give UTC explicitly")
        return text.astimezone(timezone.utc)
    try:
        day = date.fromisoformat(text)
        return datetime.combine(day + timedelta(days=1 if end_of_day else 0), time(), timezone.utc)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"cannot read date {text!r}; write 2026-01-31 or 2026-01-31T12:00:00Z") from None
    if dt.tzinfo is None:
        raise InputError(f"time {text!r} has no timezone; add 'Z' (UTC) or write a bare date")
    return dt.astimezone(timezone.utc)


# --- collecting --------------------------------------------------------------------------------------------


def collect(since: datetime | None = None, until: datetime | None = None, model: str | None = None,
            now: datetime | None = None, *, rehash: bool = True, timings: dict[str, float] | None = None) -> Audit:
    """Expire overdue approvals, then gather every in-scope version's evidence and the ledger chain status.
    ``timings``, when given, gets ``rehash_s``: the seconds spent reading the stored adapters' bytes (their digests
    and model-signing bundles), so the registry and ledger checks can be timed apart from them."""
    now = approvals.decision_time(now)  # the audit writes expiries: never dated ahead
    if since and until and since >= until:
        raise InputError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    expired = {(d.model, d.version) for d in approvals.expire_overdue(model, now)}
    prefect_events.announce_expiring(model, now)  # approvals due within 14 days: a Prefect event each
    c = registry.client()
    with Ledger() as led:
        chain, all_events = led.verified_events()
        guards = led.missing_guards()
        hashes = {e.seq: e.hash for e in all_events}  # what led.hashes() reads, from the same snapshot
        ledger_id = hashes.get(1, "")
        t = trust.evaluate(all_events)
        critical, high = led.checkpoint_problems(audit_checkpoints(c, ledger_id), known_key=lambda key: (
            t.policy is not None and "service" in getattr(t.policy.holder(key), "roles", ())), hashes=hashes)
    events = t.events(model=model)
    by_model = _group(events, "model")
    audit = Audit(format_at(now), since and format_at(since), until and format_at(until), model, asdict(chain),
                  ledger_guards_missing=guards, ledger_id=ledger_id,
                  checkpoints={"critical": critical, "high": high}, trust=trust_summary(t))
    if ledger_id and chain.ok:  # this audit's view of the head is itself a checkpoint
        checkpoints.record(ledger_id, chain.length, chain.head_hash, format_at(now), "audit")
    runs: dict[str, dict[str, float]] = {}  # run id -> its metrics
    roots: dict[str, str] = {}  # run id -> its artifact root
    seen: set[tuple[str, str]] = set()
    rehash_s = 0.0
    with tempfile.TemporaryDirectory(prefix="adaptrail-audit-") as tmp:
        for name in audit_reads.model_names(c, model):
            model_events = by_model.get(name, [])
            by_version = _group(model_events, "version")
            holder = registry.version_by_alias(c, name, ALIAS_CHAMPION)
            alias = str(holder.version) if holder is not None else None
            should = approvals.expected_champion(model_events)
            found = audit_reads.versions(c, name)
            audit_reads.read_runs(c, {mv.run_id for mv in found if mv.run_id} - set(runs), runs, roots)
            for mv in found:
                version = str(mv.version)
                seen.add((name, version))
                own = by_version.get(version, [])
                if not _in_scope(mv.creation_timestamp, own, since, until):
                    continue
                started = perf_counter()
                integrity, signing = _adapter_checks(mv, own, t, Path(tmp) / f"{name}-{version}") if rehash \
                    else ([], {})
                rehash_s += perf_counter() - started
                rec = _record(c, mv, own, model_events, (alias, should), (runs, roots), integrity)
                rec.expired_by_audit = (name, version) in expired
                rec.model_signing = signing
                audit.versions.append(rec)
    if timings is not None:
        timings["rehash_s"] = rehash_s
    gone = {(e.model, e.version) for e in events} - seen
    audit.unregistered = [f"{m} v{v}" for m, v in sorted(gone)
                          if _in_scope(None, [e for e in by_model[m] if e.version == v], since, until)]
    return audit


def _group(events: list[LedgerEvent], by: str) -> dict[str, list[LedgerEvent]]:
    """Events by their ``model`` or ``version``, each list in seq order."""
    out: dict[str, list[LedgerEvent]] = {}
    for e in events:
        out.setdefault(getattr(e, by), []).append(e)
    return out


def _in_scope(created_ms: int | None, own: list[LedgerEvent], since: datetime | None, until: datetime | None
              ) -> bool:
    """Created in the window, or any ledger decision on it in the window."""
    if since is None and until is None:
        return True
    lo, hi = since and format_at(since), until and format_at(until)
    created = [format_at(datetime.fromtimestamp(created_ms / 1000, timezone.utc))] if created_ms else []
    stamps = created + [e.at for e in own]
    return any((lo is None or s >= lo) and (hi is None or s < hi) for s in stamps)


def _adapter_checks(mv, own: list[LedgerEvent], t: trust.Trust, tmp: Path) -> tuple[list[str], dict[str, Any]]:
    """The byte checks of one version's stored adapter, found or downloaded once for both: its files against the
    digest the ledger recorded (problems, [] = intact) and its model-signing bundle (:func:`version_check`)."""
    folder = _adapter_folder(mv.source, tmp)
    integrity = [folder] if isinstance(folder, str) else adapter_problems(
        folder, approvals.ledger_tags(own).get(Tag.ADAPTER_DIGEST, ""))
    return integrity, version_check(mv, own, t, folder)


def _record(c, mv, own: list[LedgerEvent], model_events: list[LedgerEvent], champions: tuple[str | None, ...],
            read: tuple[dict[str, dict[str, float]], dict[str, str]], integrity: list[str]) -> VersionRecord:
    """One version's evidence; ``champions`` = (the alias in MLflow, the champion by the ledger); ``read``: the
    runs read so far (:func:`audit_reads.read_runs`: metrics, artifact roots); ``integrity``: :func:`_adapter_checks`'
    problems with the stored adapter ([] when intact or not re-hashed)."""
    runs, roots = read
    name, version, tags = mv.name, str(mv.version), dict(mv.tags)
    view = approvals.ledger_tags(own)  # judge on the record, never on editable tags
    gates = {g: view.get(Tag.gate(g), GateOutcome.SKIPPED if own else UNRECORDED) for g in GATES}
    failed = {g for g, o in gates.items() if o == GateOutcome.FAILED}
    failed |= {str(e.extra.get("gate", "?")) for e in own if e.action == "gate_failed"}
    lineage = {k: view.get(k) or tags.get(k, "") for k in LINEAGE_TAGS}  # the ledger's record first
    alias = champions[0]
    champion = version in champions
    return VersionRecord(
        model=name, version=version,
        created_at=format_at(datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, timezone.utc)),
        status=view.get(Tag.APPROVAL_STATUS, UNRECORDED), champion=champion, run_id=mv.run_id or "",
        gates={g: str(o) for g, o in gates.items()}, failed_gates=sorted(failed),
        metrics=_metrics(c, mv.run_id, runs), lineage=lineage,
        missing_lineage=[k.removeprefix("adaptrail.") for k, v in lineage.items() if not v],
        review_due=view.get(Tag.REVIEW_DUE, ""), decisions=[decision_record(e) for e in own],
        integrity=integrity,
        disagreements=approvals.disagreements(name, version, tags, model_events, alias, approvals.identity_of(mv)),
        reproduction=last_reproduction(own), monitoring=monitoring_record.history(own),
        group_metrics=_group_metrics(mv.run_id, runs),
        card=card_location(c, mv.run_id, roots.get(mv.run_id or "")),
    )


def _metrics(c, run_id: str | None, cache: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """The version's headline metrics from its run; {} (n/a in the report) only when the run was deleted. A store
    that cannot be read fails the audit (after retries) rather than passing as n/a."""
    if run_id and run_id not in cache:
        cache[run_id] = registry.run_metrics(c, run_id) or {}
    got = cache.get(run_id or "", {})
    return {m: got[m] for m in METRICS if m in got}


def _group_metrics(run_id: str | None, cache: dict[str, dict[str, float]]) -> dict[str, float]:
    """The bias gate's summary metrics the run logged (``bias.accuracy_gap``, ...), from :func:`_metrics`' cache."""
    return {k: v for k, v in sorted(cache.get(run_id or "", {}).items()) if k.startswith("bias.")}


def _adapter_folder(source: str, tmp: Path) -> Path | str:
    """The stored adapter's folder (in place when it is a local folder, else a downloaded copy), or why it could
    not be read."""
    local = registry.local_path_of(source)
    try:
        return local if local is not None and local.is_dir() else fetch_adapter(source, tmp)
    except InputError as err:
        return str(err)


# --- judging -----------------------------------------------------------------------------------------------


def assess(audit: Audit, now: datetime | None = None, due_within_days: int = DUE_SOON_DAYS) -> list[Finding]:
    """Findings for the collected records and chain, most severe first; also stored on ``audit.findings``."""
    today = approvals.utc_now(now).astimezone(timezone.utc).date()
    out: list[Finding] = []
    if not audit.chain["ok"]:
        out.append(Finding("critical", "ledger-chain", "", "", f"ledger chain is broken: {audit.chain['problem']}"))
    for severity in ("critical", "high"):
        out += [Finding(severity, "ledger-checkpoint", "", "", p) for p in audit.checkpoints.get(severity, [])]
    if audit.ledger_guards_missing:
        out.append(Finding("high", "ledger-not-append-only", "", "", "the ledger database lacks the append-only "
                           f"triggers {', '.join(audit.ledger_guards_missing)}: rows can be edited or deleted; create "
                           "them as the table's owner (infra/postgres/init-ledger.sql)"))
    out += [Finding(*f) for f in trust_findings(audit.trust, audit.versions)]
    for r in audit.versions:
        out += _version_findings(r, today, due_within_days)
    for missing in audit.unregistered:
        model, version = missing.rsplit(" v", 1)
        out.append(Finding("high", "unregistered", model, version, "the ledger records this version but the MLflow "
                           "registry does not have it (deleted, or another registry)"))
    out.sort(key=lambda f: (SEVERITIES.index(f.severity), f.model, _num(f.version), f.code))
    audit.findings = out
    return out


def _version_findings(r: VersionRecord, today: date, due_within_days: int) -> list[Finding]:
    out = []

    def add(severity: str, code: str, message: str) -> None:
        out.append(Finding(severity, code, r.model, r.version, message))

    if r.integrity:
        add("critical", "adapter-integrity", "stored adapter does not match its digest: " + "; ".join(r.integrity))
    out += [Finding(*f) for f in signing_findings(r.model, r.version, r.status != UNRECORDED, r.model_signing)]
    if r.disagreements:
        add("high", "tag-ledger", "; ".join(r.disagreements))
    if r.status == ApprovalStatus.EXPIRED:
        if r.champion:
            add("high", "champion-expired", f"champion, but its review was due {r.review_due or '(unset)'}; "
                f"re-review with `adaptrail review {r.model} {r.version}`")
        else:
            add("low", "expired", f"approval expired (review was due {r.review_due or '(unset)'})")
    if r.failed_gates:
        for d in r.decisions:
            if d["awaiting_second"]:
                continue  # the first of an override's two approvals: its confirmation is judged
            if d["action"] == "overridden" or d["confirms"]:
                add("medium", "override", f"approved despite failed gates ({', '.join(r.failed_gates)}) by "
                    f"{' and '.join(d['approvers'])} at {d['at']}: {d['reason']}")
            elif d["action"] == "approved":
                add("high", "failed-gate-approved", f"approved by {d['actor']} at {d['at']} although gates "
                    f"failed ({', '.join(r.failed_gates)}) and no override was recorded")
    out += [Finding(*f) for f in reproduction_findings(r.model, r.version, r.reproduction)
            + monitoring_record.findings(r.model, r.version, r.monitoring)]
    if r.missing_lineage:
        add("medium", "lineage-missing", "missing lineage: " + ", ".join(r.missing_lineage))
    too_long = _review_period_problem(r)
    if too_long:
        add("high", "review-period-too-long", too_long)
    if r.status == ApprovalStatus.APPROVED:
        try:
            left = (date.fromisoformat(r.review_due) - today).days
        except ValueError:
            left = None
        if left is not None and 0 <= left <= due_within_days:
            add("low", "review-due-soon", f"review due {r.review_due} (in {left} days)")
    return out


def _review_period_problem(r: VersionRecord) -> str:
    """'' unless the version's review date lies further after its last approval than any policy allows."""
    approving = [d for d in r.decisions if d["action"] in (*APPROVING, "reviewed") and not d["awaiting_second"]]
    if r.status != ApprovalStatus.APPROVED or not approving or not r.review_due:
        return ""
    approved = datetime.fromisoformat(approving[-1]["at"].replace("Z", "+00:00")).date()
    try:
        due = date.fromisoformat(r.review_due)
    except ValueError:
        return f"review date {r.review_due!r} is not a date"
    if (due - approved).days <= MAX_REVIEW_PERIOD_DAYS:
        return ""
    return (f"review due {r.review_due} is {(due - approved).days} days after the approval of {approved}; at most "
            f"{MAX_REVIEW_PERIOD_DAYS} are allowed, so the approval is treated as needing review")


def verdict(findings: list[Finding], fail_on: str = "high") -> tuple[str, int]:
    """(verdict, exit code): ``fail`` and 4 when any finding is at or above ``fail_on``; else 0."""
    if fail_on not in SEVERITIES:
        raise InputError(f"fail_on {fail_on!r} is not a severity; use one of: {', '.join(SEVERITIES)}")
    worst = min((SEVERITIES.index(f.severity) for f in findings), default=len(SEVERITIES))
    if worst <= SEVERITIES.index(fail_on):
        return "fail", EXIT_AUDIT_FINDINGS
    return ("pass with findings" if findings else "pass"), EXIT_OK


def severity_counts(findings: list[Finding]) -> dict[str, int]:
    return {s: sum(f.severity == s for f in findings) for s in SEVERITIES}


# --- point in time -----------------------------------------------------------------------------------------


def champion_at(model: str, when: datetime, events: list[LedgerEvent] | None = None) -> dict[str, Any]:
    """Which version the ledger made champion of ``model`` at ``when``, who approved it, when and why.

    Approved/overridden moves the champion; revoked, rejected or expired removes it; reviewed renews it.
    """
    if not isinstance(model, str) or not model.strip():
        raise InputError("name the model: --champion-of MODEL")
    when = parse_when(when)
    if events is None:
        with Ledger() as led:
            events = led.events(model=model, until=when)
    cut = format_at(when)
    current: dict[str, Any] | None = None
    for e in events:
        if e.model != model or e.at >= cut:
            continue
        if e.action in APPROVING:
            current = {"version": e.version, **decision_record(e)}
        elif current and e.version == current["version"]:
            if e.action in ("revoked", "rejected", "expired"):
                current = None
            elif e.action == "reviewed":
                current["reviews"] = [*current.get("reviews", []), decision_record(e)]
    return {"model": model, "as_of": cut, "champion": current}


def _num(version: str) -> int:
    return int(version) if version.isdigit() else -1
