"""Prefect events about model versions, so Prefect automations can notify people: a notification sent after the
ledger event it describes has committed. The ledger stays the record; an event that cannot be sent is a warning and
never fails or undoes what was recorded.

Event names (one per ledger action, :data:`ANNOUNCED`; ``gate_failed`` is folded into ``registered``, whose labels
and payload carry every gate, and ``policy`` events are not about a version):

- ``adaptrail.version.registered`` / ``.approved`` / ``.rejected`` / ``.overridden`` (a first override, awaiting a
  second approver) / ``.reviewed`` / ``.revoked`` / ``.expired`` / ``.reproduced`` / ``.monitored`` /
  ``.review_required`` (monitoring found a breach; an automation can page the owner);
- ``adaptrail.approval.expiring``: an approved version whose ``review.due`` is at most :data:`EXPIRING_WITHIN_DAYS`
  days away (:func:`announce_expiring`; its id is fixed per version and due date, so re-announcing is a duplicate).

Each event's resource is ``adaptrail.model-version.<model>.<version>`` with the labels in :data:`LABELS` (model,
version, approval status and review due after the event, ledger seq, actor); related resources are the version's
MLflow run (``mlflow.run.<id>``, role ``mlflow-run``), the flow run that trained it (role ``training-flow-run``) and,
when sent from inside a flow or task run, that run (role ``flow-run`` / ``task-run``); a ``reproduced`` event also
names the reproduction's runs (roles ``reproduced-run`` / ``reproduced-flow-run``). ``occurred`` is when the event is
sent; the ledger's time is ``payload.at``. Events are unsigned notifications (anyone who can write to the Prefect API
can send one): nothing in adaptrail reads them as evidence.

Where events go: to ``PREFECT_API_URL`` when it is set (a CLI decision outside any flow too); inside a flow run on the
embedded API (``make run``), to that temporary API, which keeps them in ``$PREFECT_HOME``'s database; otherwise
nowhere (a CLI decision without a server starts no temporary API just to announce it).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from tasks.core.names import ApprovalStatus, Tag
from tasks.governance.ledger import Ledger, LedgerEvent
from tasks.governance.ledger_view import APPROVING, ledger_tags, utc_now

if TYPE_CHECKING:
    from prefect.events import Event

log = logging.getLogger("adaptrail")

VERSION_EVENT_PREFIX = "adaptrail.version."
EXPIRING = "adaptrail.approval.expiring"
#: Ledger actions announced as ``adaptrail.version.<action>``.
ANNOUNCED = ("registered", "approved", "rejected", "overridden", "reviewed", "revoked", "expired", "reproduced",
             "monitored", "review_required")
EXPIRING_WITHIN_DAYS = 14
RESOURCE_PREFIX = "adaptrail.model-version."
LABEL_MODEL, LABEL_VERSION, LABEL_SEQ, LABEL_ACTOR = ("adaptrail.model", "adaptrail.version", "adaptrail.ledger.seq",
                                                      "adaptrail.actor")
LABELS = (LABEL_MODEL, LABEL_VERSION, Tag.APPROVAL_STATUS, Tag.REVIEW_DUE, LABEL_SEQ, LABEL_ACTOR)
#: Event ids are uuid5 in this namespace: the same ledger event (or expiring notice) is always the same event.
ID_NAMESPACE = uuid.UUID("6f3a1c52-0d7e-4b8e-9a55-2f1d6c9e4a17")
SEND_TIMEOUT_S = 10.0
#: ``off`` sends nothing (set inside the scratch state of `adaptrail reproduce`: its registry is not the real one).
ENV_EVENTS = "ADAPTRAIL_EVENTS"
_PAYLOAD_SKIPS = ("tags", "subject", "identity", "request")  # large or repeated in labels / related resources


def resource_id(model: str, version: str | int) -> str:
    return f"{RESOURCE_PREFIX}{model}.{version}"


# --- building events (pure: nothing is sent) ---------------------------------------------------------------


def version_event(event: LedgerEvent, history: Sequence[LedgerEvent] = ()) -> "Event | None":
    """The Prefect event announcing ``event`` (None for actions not announced). ``history``: the version's ledger
    events before it (or including it), for the state after it (an override sets no status of its own)."""
    from prefect.events import Event

    if event.action not in ANNOUNCED:
        return None
    own = [e for e in history if (e.model, e.version) == (event.model, event.version) and e.seq != event.seq]
    view = ledger_tags([*own, event])
    extra = event.extra or {}
    payload = {"action": event.action, "at": event.at, "reason": event.reason,
               "previous_status": extra.get("previous_status", ""),
               "ledger": {"seq": event.seq, "hash": event.hash}} | {k: v for k, v in extra.items()
                                                                   if k not in _PAYLOAD_SKIPS}
    related = _related([*own, event], view)
    for key, kind in (("run_id", "mlflow.run"), ("flow_run_id", "prefect.flow-run")):  # a reproduction's new run
        if extra.get(key) and extra[key] != "none":
            related.append({"prefect.resource.id": f"{kind}.{extra[key]}",
                            "prefect.resource.role": f"{event.action}-{kind.rpartition('.')[2]}"})
    return Event(event=VERSION_EVENT_PREFIX + event.action, id=uuid.uuid5(ID_NAMESPACE, f"ledger/{event.hash}"),
                 occurred=datetime.now(timezone.utc),
                 resource=_resource(event.model, event.version, view, event.seq, event.actor), related=related,
                 payload=payload)


def expiring_events(events: Iterable[LedgerEvent], now: datetime | None = None,
                    within_days: int = EXPIRING_WITHIN_DAYS) -> list["Event"]:
    """``adaptrail.approval.expiring`` for each approved version whose review is due today or within
    ``within_days`` days (overdue ones are expired instead); ids fixed per version and due date."""
    from prefect.events import Event

    today = utc_now(now).astimezone(timezone.utc).date()
    by_version: dict[tuple[str, str], list[LedgerEvent]] = {}
    for e in events:
        by_version.setdefault((e.model, e.version), []).append(e)
    out = []
    for (model, version), own in sorted(by_version.items()):
        view = ledger_tags(own)
        due = _date(view.get(Tag.REVIEW_DUE, ""))
        if view.get(Tag.APPROVAL_STATUS) != ApprovalStatus.APPROVED or due is None:
            continue
        days_left = (due - today).days
        if not 0 <= days_left <= within_days:
            continue
        approval = [e for e in own if e.action in (*APPROVING, "reviewed") and not e.extra.get("awaiting_second")]
        last = approval[-1] if approval else own[-1]
        registered = next((e.hash for e in own if e.action == "registered"), "")
        out.append(Event(
            event=EXPIRING, id=uuid.uuid5(ID_NAMESPACE, f"{EXPIRING}/{model}/{version}/{due}/{registered}"),
            occurred=datetime.now(timezone.utc), resource=_resource(model, version, view, last.seq, last.actor),
            related=_related(own, view),
            payload={"review_due": due.isoformat(), "days_left": days_left, "within_days": within_days,
                     "approved_by": view.get(Tag.APPROVAL_BY, ""), "approved_at": view.get(Tag.APPROVAL_AT, ""),
                     "ledger": {"seq": last.seq, "hash": last.hash}}))
    return out


def _resource(model: str, version: str, view: dict[str, str], seq: int, actor: str) -> dict[str, str]:
    labels = {"prefect.resource.id": resource_id(model, version), "prefect.resource.name": f"{model} v{version}",
              LABEL_MODEL: model, LABEL_VERSION: str(version), LABEL_SEQ: str(seq), LABEL_ACTOR: actor}
    labels |= {k: view[k] for k in (Tag.APPROVAL_STATUS, Tag.REVIEW_DUE) if view.get(k)}
    return labels


def _related(own: Sequence[LedgerEvent], view: dict[str, str]) -> list[dict[str, str]]:
    """The version's MLflow run and training flow run, and the Prefect run this is sent from (if any)."""
    registered = next((e for e in own if e.action == "registered"), None)
    identity = (registered.extra.get("identity") if registered else None) or {}
    related = []
    if identity.get("run_id"):
        related.append({"prefect.resource.id": f"mlflow.run.{identity['run_id']}",
                        "prefect.resource.role": "mlflow-run"})
    context = _run_context()
    trained_by = f"prefect.flow-run.{view.get(Tag.FLOW_RUN_ID) or 'none'}"
    if not trained_by.endswith(".none") and trained_by not in {r["prefect.resource.id"] for r in context}:
        related.append({"prefect.resource.id": trained_by, "prefect.resource.role": "training-flow-run"})
    return related + context


def _run_context() -> list[dict[str, str]]:
    from prefect.context import FlowRunContext, TaskRunContext

    out = []
    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    flow_run = getattr(flow_ctx, "flow_run", None)
    flow_run_id = getattr(flow_run, "id", None) or getattr(getattr(task_ctx, "task_run", None), "flow_run_id", None)
    if flow_run_id:
        out.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}
                   | ({"prefect.resource.name": flow_run.name} if getattr(flow_run, "name", None) else {}))
    task_run = getattr(task_ctx, "task_run", None)
    if task_run is not None:
        out.append({"prefect.resource.id": f"prefect.task-run.{task_run.id}", "prefect.resource.role": "task-run",
                    "prefect.resource.name": task_run.name})
    return out


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --- sending (never raises) ------------------------------------------------------------------------------


def notify(event: LedgerEvent, history: Sequence[LedgerEvent] | None = None) -> "Event | None":
    """Announce a committed ledger event to Prefect (see the module docstring for where it goes); the event sent,
    or None (not announced, no API to send to, or sending failed: a warning). Never raises. ``history``: the
    version's earlier ledger events, read from the ledger when not given (``notify(event)`` after any append, e.g.
    a ``reproduced`` event)."""
    if not events_enabled() or event.action not in ANNOUNCED:
        return None
    try:
        if history is None:
            with Ledger() as led:
                history = led.events(model=event.model, version=event.version)
        built = version_event(event, history)
    except Exception as err:  # noqa: BLE001 - a notification never fails what the ledger recorded
        log.warning("Prefect event about %s v%s (%s) not built: %s", event.model, event.version, event.action, err)
        return None
    return built if built is not None and send([built]) else None


def notify_all(events: Iterable[LedgerEvent], history: Sequence[LedgerEvent] = ()) -> list["Event"]:
    """:func:`notify` for each of ``events`` in order (each after the ones before it); the events sent."""
    sent, seen = [], list(history)
    for e in events:
        out = notify(e, seen)
        seen.append(e)
        if out is not None:
            sent.append(out)
    return sent


def announce_expiring(model: str | None = None, now: datetime | None = None,
                      within_days: int = EXPIRING_WITHIN_DAYS) -> list["Event"]:
    """Send ``adaptrail.approval.expiring`` for every approved version (of ``model``, or all) due for review within
    ``within_days`` days; the events sent. Never raises."""
    if not events_enabled():
        return []
    try:
        from tasks.governance import trust

        with Ledger() as led:
            built = expiring_events(trust.read(led).events(model=model), now, within_days)
    except Exception as err:  # noqa: BLE001 - the audit and the daily check go on; the ledger is unchanged
        log.warning("approvals expiring within %d days not announced to Prefect: %s", within_days, err)
        return []
    return built if built and send(built) else []


def events_enabled() -> bool:
    """True when there is a Prefect API to send to without starting one: ``PREFECT_API_URL``, or a flow/task run in
    progress (on the embedded API, already running)."""
    if os.environ.get(ENV_EVENTS, "").lower() == "off":  # e.g. the scratch registry of `adaptrail reproduce`
        return False
    try:
        from prefect.context import FlowRunContext, TaskRunContext
        from prefect.settings import PREFECT_API_URL

        return bool(PREFECT_API_URL.value()) or FlowRunContext.get() is not None or TaskRunContext.get() is not None
    except Exception as err:  # noqa: BLE001
        log.warning("Prefect settings unreadable, no event sent: %s", err)
        return False


def send(events: Sequence["Event"]) -> bool:
    """POST the events to the Prefect API (``/api/events``, one request); False with a warning if that fails."""
    if not events:
        return True
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        body: list[dict[str, Any]] = [e.model_dump(mode="json") for e in events]
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1}), \
                get_client(sync_client=True, httpx_settings={"timeout": SEND_TIMEOUT_S}) as client:
            client.request("POST", "/events", json=body)
        return True
    except Exception as err:  # noqa: BLE001 - unreachable API, refused, timed out: the record is the ledger's
        names = ", ".join(sorted({e.event for e in events}))
        log.warning("Prefect event(s) %s about %s not sent (%s: %s); the ledger has the record, nothing is undone",
                    names, ", ".join(e.resource.id for e in events), type(err).__name__, err)
        return False
