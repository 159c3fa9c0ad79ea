"""Prefect events about model versions (tasks/governance/events.py): their names, resources, labels and related
resources; that each registration, decision and expiry announces itself once, after the ledger commit; that an
unreachable Prefect API never fails or undoes a decision; the approval-expiring notice and the shipped automation.
The ``integration`` test reads the events back from a real Prefect server and has its automation notify a webhook."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.core.names import GATES, Tag
from tasks.governance import approvals, automations, events, registry
from tasks.governance.ledger import Ledger
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "router"
REQUESTER = "carol"


def seed(now: datetime, failed: tuple[str, ...] = (), model: str = MODEL) -> str:
    """A version registered as the register step does it (MLflow version + the ledger's ``registered``)."""
    c = registry.client()
    run_id = registry.start_run(c, "tests", "seed", {})
    gates = {g: "failed" if g in failed else "passed" for g in GATES}
    status = "rejected" if failed else "pending"
    tags = {Tag.REQUESTED_BY: REQUESTER, Tag.ADAPTER_DIGEST: "a" * 64, Tag.BASE_MODEL: "tiny",
            Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.BASE_MODEL_REVISION: "local", Tag.DATASET_DIGEST: "d" * 64,
            Tag.FLOW_RUN_ID: "0b7e1c0e-1f57-4e43-9d0e-6a8f4c1b2a3d"} | {Tag.gate(g): o for g, o in gates.items()}
    mv = registry.register_version(c, model, run_id, registry.artifact_uri(c, run_id, "adapter"), tags)
    approvals.record_registration(model, mv.version, status, gates, {"gates": gates}, REQUESTER, now=now)
    return str(mv.version)


def ledger(version: str | None = None, model: str = MODEL):
    with Ledger() as led:
        return led.events(model=model, version=version)


@pytest.fixture
def sent(monkeypatch):
    """Every event the code sends, as if a Prefect API were reachable (nothing leaves the process)."""
    out: list = []
    monkeypatch.setattr(events, "events_enabled", lambda: True)
    monkeypatch.setattr(events, "send", lambda evs: out.extend(evs) or True)
    return out


T0 = datetime(2026, 1, 10, 9, 0, tzinfo=timezone.utc)


# --- payloads ----------------------------------------------------------------------------------------------


def test_registration_announces_once_with_the_versions_resource_labels_and_related_runs(home, people, sent):
    v = seed(T0, failed=("bias",))
    assert [e.action for e in ledger(v)] == ["registered", "gate_failed"]  # gate_failed rides on `registered`
    (ev,) = sent
    assert ev.event == "adaptrail.version.registered"
    r = ev.resource
    assert r.id == f"adaptrail.model-version.{MODEL}.{v}" and r.name == f"{MODEL} v{v}"
    assert (r["adaptrail.model"], r["adaptrail.version"], r["adaptrail.approval.status"]) == (MODEL, v, "rejected")
    assert r["adaptrail.ledger.seq"] == str(ledger(v)[0].seq) and r["adaptrail.actor"] == "pipeline"
    assert ev.payload["gates"]["bias"] == "failed" and ev.payload["requested_by"] == REQUESTER
    assert ev.payload["at"] == ledger(v)[0].at and ev.payload["ledger"]["hash"] == ledger(v)[0].hash
    roles = {x.role: x.id for x in ev.related}
    run_id = registry.client().get_model_version(MODEL, v).run_id
    assert roles == {"mlflow-run": f"mlflow.run.{run_id}",
                     "training-flow-run": "prefect.flow-run.0b7e1c0e-1f57-4e43-9d0e-6a8f4c1b2a3d"}
    again = events.version_event(ledger(v)[0], ledger(v))
    assert again.id == ev.id  # the same ledger event is always the same Prefect event: a resend is a duplicate
    assert events.version_event(ledger(v)[1], ledger(v)) is None  # gate_failed is not announced on its own


def test_each_decision_and_expiry_announces_what_the_ledger_recorded(home, people, sent):
    v1, v2, v3 = seed(T0), seed(T0), seed(T0 + timedelta(minutes=1), failed=("bias",))
    sent.clear()
    approvals.approve(MODEL, v1, people["alice"], "good", now=T0 + timedelta(hours=1))
    approvals.reject(MODEL, v2, people["bob"], "not yet", now=T0 + timedelta(hours=2))
    approvals.approve(MODEL, v3, people["alice"], "bias finding is a data artefact", override=True,
                      now=T0 + timedelta(hours=3))
    assert not approvals.approve(MODEL, v1, people["alice"], "good", now=T0 + timedelta(hours=4)).changed
    later = T0 + timedelta(days=183)
    approvals.expire_overdue(MODEL, now=later)
    approvals.review(MODEL, v1, people["dave"], "re-checked", now=later)
    approvals.revoke(MODEL, v1, people["bob"], "data problem", now=later + timedelta(hours=1))
    names = [(e.event, e.resource["adaptrail.version"]) for e in sent]
    assert names == [("adaptrail.version.approved", v1), ("adaptrail.version.rejected", v2),
                     ("adaptrail.version.overridden", v3), ("adaptrail.version.expired", v1),
                     ("adaptrail.version.reviewed", v1), ("adaptrail.version.revoked", v1)]  # nothing when unchanged
    by = {e.event: e for e in sent}
    for e in sent:  # each names the ledger event it announces, committed before it was sent
        (match,) = [x for x in ledger(e.resource["adaptrail.version"]) if x.seq == e.payload["ledger"]["seq"]]
        assert (e.resource["adaptrail.ledger.seq"], e.payload["ledger"]["hash"]) == (str(match.seq), match.hash)
        assert e.event == "adaptrail.version." + match.action and e.resource["adaptrail.actor"] == match.actor
    approved = by["adaptrail.version.approved"].resource
    assert approved["adaptrail.approval.status"] == "approved" and approved["adaptrail.actor"] == "alice"
    assert approved["adaptrail.review.due"] == (T0 + timedelta(hours=1, days=182)).date().isoformat()
    assert by["adaptrail.version.approved"].payload["previous_status"] == "pending"
    over = by["adaptrail.version.overridden"]  # a first override changes no status: the label says the state after
    assert over.resource["adaptrail.approval.status"] == "rejected" and over.payload["failed_gates"] == ["bias"]
    assert by["adaptrail.version.expired"].resource["adaptrail.actor"] == "pipeline"
    assert by["adaptrail.version.reviewed"].resource["adaptrail.review.due"] == (later + timedelta(days=182)).date(
        ).isoformat()
    assert by["adaptrail.version.revoked"].resource["adaptrail.approval.status"] == "revoked"


def test_a_reproduction_is_announced_with_the_versions_state_read_from_the_ledger(home, people, sent):
    """What `adaptrail reproduce` calls after appending its ``reproduced`` event: ``events.notify(event)``."""
    from tasks.governance.ledger import LedgerEvent

    v = seed(T0)
    approvals.approve(MODEL, v, people["alice"], "good", now=T0 + timedelta(hours=1))
    last = ledger(v)[-1]
    reproduced = LedgerEvent(last.seq + 1, T0.isoformat(), MODEL, v, "reproduced", "pipeline", "byte-identical",
                             "e" * 64, last.hash, "f" * 64, {"byte_identical": True, "metric_differences": {},
                                                             "run_id": "r" * 32, "flow_run_id": "none"})
    sent.clear()
    ev = events.notify(reproduced)  # no history given: the version's state comes from the ledger
    assert sent == [ev] and ev.event == "adaptrail.version.reproduced"
    assert ev.resource["adaptrail.approval.status"] == "approved" and ev.resource["adaptrail.ledger.seq"] == str(
        last.seq + 1)
    assert ev.resource["adaptrail.review.due"] == last.extra["tags"][Tag.REVIEW_DUE]
    assert ev.payload["byte_identical"] is True and ev.payload["reason"] == "byte-identical"
    assert {r.role: r.id for r in ev.related}["reproduced-run"] == "mlflow.run." + "r" * 32
    assert "reproduced-flow-run" not in {r.role for r in ev.related}  # no flow run recorded


def test_approvals_due_within_14_days_are_announced_once_per_version_and_due_date(home, people, sent):
    v1, v2 = seed(T0), seed(T0)
    seed(T0)  # pending: never announced
    approvals.approve(MODEL, v1, people["alice"], "ok", now=T0 + timedelta(hours=1))  # due T0+182d
    approvals.approve(MODEL, v2, people["alice"], "ok", now=T0 + timedelta(days=10))  # due T0+192d
    due1 = date.fromisoformat(ledger(v1)[-1].extra["tags"][Tag.REVIEW_DUE])
    day = datetime.combine(due1 - timedelta(days=14), datetime.min.time(), timezone.utc)

    def due_soon(now: datetime) -> dict[str, int]:
        return {e.resource["adaptrail.version"]: e.payload["days_left"] for e in events.expiring_events(ledger(), now)}

    assert due_soon(day - timedelta(days=1)) == {}  # 15 days left: not yet
    assert due_soon(day) == {v1: 14}  # v2 has 24 days left, v3 is pending
    assert due_soon(day + timedelta(days=14)) == {v1: 0, v2: 10}  # the due day itself is still in date
    assert due_soon(day + timedelta(days=15)) == {v2: 9}  # overdue: expired, not announced
    (first,) = [e for e in events.expiring_events(ledger(), day)]
    (second,) = [e for e in events.expiring_events(ledger(), day + timedelta(days=3)) if e.resource.id == first.resource.id]
    assert first.event == "adaptrail.approval.expiring" and first.id == second.id  # a daily check resends the same
    assert first.resource["adaptrail.review.due"] == due1.isoformat() and first.payload["approved_by"] == "alice"
    approvals.review(MODEL, v1, people["dave"], "renewed", now=day + timedelta(days=1))  # a new due date ...
    assert not [e for e in events.expiring_events(ledger(), day + timedelta(days=1)) if e.resource.id == first.resource.id]
    sent.clear()
    assert [e.resource["adaptrail.version"] for e in events.announce_expiring(MODEL, now=day + timedelta(days=14))] \
        == [v2] == [e.resource["adaptrail.version"] for e in sent]


# --- never breaking a decision -----------------------------------------------------------------------------


def test_an_unreachable_prefect_api_is_a_warning_and_the_decision_stands(home, people, caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    v = seed(T0)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}), \
            caplog.at_level(logging.WARNING, logger="adaptrail"):
        started = time.monotonic()
        decision = approvals.approve(MODEL, v, people["alice"], "good", now=T0 + timedelta(hours=1))
        took = time.monotonic() - started
    assert decision.changed and decision.status == "approved" and decision.champion == v
    assert [e.action for e in ledger(v)] == ["registered", "approved"]
    assert registry.client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "approved"
    assert approvals.tag_ledger_disagreements(MODEL, v) == []
    warning = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert warning and "adaptrail.version.approved" in warning[0] and "nothing is undone" in warning[0]
    assert took < 15, f"a decision waited {took:.1f} s on an unreachable Prefect API"


def test_a_failure_building_or_sending_never_raises(home, people, monkeypatch, caplog):
    monkeypatch.setattr(events, "events_enabled", lambda: True)
    monkeypatch.setattr(events, "version_event", lambda *a: 1 / 0)
    v = seed(T0)  # registration goes on
    assert approvals.approve(MODEL, v, people["alice"], "good", now=T0 + timedelta(hours=1)).changed
    assert "not built" in caplog.text

    def boom():
        raise RuntimeError("ledger unreadable")

    monkeypatch.setattr(events, "Ledger", boom)
    assert events.announce_expiring(MODEL) == []


def test_without_an_api_nothing_is_sent_and_no_temporary_server_starts(home, people, monkeypatch):
    """A CLI decision on the embedded default (no PREFECT_API_URL, no flow run) announces nothing."""
    import prefect.client.orchestration as orchestration
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def no_client(*a, **k):
        raise AssertionError("a Prefect client (and so a temporary API) was started")

    monkeypatch.setattr(orchestration, "get_client", no_client)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not events.events_enabled()
        v = seed(T0)
        assert approvals.approve(MODEL, v, people["alice"], "good", now=T0 + timedelta(hours=1)).changed
        assert events.notify(ledger(v)[-1], ledger(v)) is None and events.announce_expiring() == []


# --- the shipped automation --------------------------------------------------------------------------------


def test_the_shipped_automation_fires_on_expiring_events_once_per_version_and_due_date():
    block = "8d0c1f5e-3b1a-4c55-9a0e-1e2f3a4b5c6d"
    a = automations.load(block)
    assert a.name == "adaptrail approval expiring within 14 days" and a.enabled
    t = a.trigger
    assert t.expect == {events.EXPIRING} and t.posture == "Reactive" and t.threshold == 1
    assert t.for_each == {"prefect.resource.id", Tag.REVIEW_DUE} and t.within == timedelta(days=14)
    assert t.match.root == {"prefect.resource.id": "adaptrail.model-version.*"}
    (action,) = a.actions
    assert action.type == "send-notification" and str(action.block_document_id) == block
    assert "{{ event.resource['adaptrail.review.due'] }}" in action.subject
    assert "adaptrail review {{ event.resource['adaptrail.model'] }}/" in action.body


def test_serve_says_how_to_turn_the_automation_on_and_refuses_a_malformed_block_name(monkeypatch):
    monkeypatch.delenv(automations.NOTIFY_BLOCK_ENV, raising=False)
    assert "ADAPTRAIL_NOTIFY_BLOCK=<block-type-slug>/<block-name>" in automations.apply_from_environment()
    monkeypatch.setenv(automations.NOTIFY_BLOCK_ENV, "governance")
    with pytest.raises(automations.InputError, match="not <block-type-slug>/<block-name>"):
        automations.apply_from_environment()


def test_the_reminders_deployment_runs_daily():
    from flows.approval_reminders import DAILY_CRON
    from flows.serve import deployments

    (dep,) = [d for d in deployments() if d.flow_name == "approval_reminders"]
    (sched,) = dep.schedules
    assert (sched.schedule.cron, sched.schedule.timezone) == (DAILY_CRON, "UTC") == ("0 7 * * *", "UTC")


# --- a real Prefect server -----------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def webhook():
    """A local HTTP endpoint standing in for Slack/Teams: the notifications it received."""
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/notify", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def _poll(what: str, fn, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            assert got, f"{what} within {timeout:.0f} s"
            return got
        time.sleep(1)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_events_reach_a_real_prefect_server_and_the_automation_notifies(servers, home, people, webhook, monkeypatch):
    """Registration, decisions (in process and from the CLI, outside any flow), expiry and the expiring notice
    arrive on a real Prefect server with their resources and labels; the shipped automation, applied by name with a
    webhook notification block, fires on the expiring event and posts its message."""
    from uuid import uuid4

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.approval_reminders import approval_reminders

    api, model = servers["prefect"] + "/api", f"events-{uuid4().hex[:8]}"
    url, received = webhook
    started = datetime.now(timezone.utc)
    with temporary_settings({PREFECT_API_URL: api}):
        block = f"adaptrail-test-{uuid4().hex[:8]}"
        CustomWebhookNotificationBlock(name="governance", url=url,
                                       json_data={"subject": "{{subject}}", "text": "{{body}}"}).save(block)
        monkeypatch.setenv(automations.NOTIFY_BLOCK_ENV, f"custom-webhook/{block}")
        assert " created (" in automations.apply_from_environment()
        applied_at = time.monotonic()
        assert " updated (" in automations.apply_from_environment()  # idempotent: serve applies it at each start
        with get_client(sync_client=True) as client:
            (automation,) = client.read_automations_by_name(automations.load(uuid4()).name)
        try:
            _decide(model, people, started, api)
            time.sleep(max(0.0, 12 - (time.monotonic() - applied_at)))  # the server loads new automations every 5 s
            reminded = approval_reminders(model=model)  # the daily deployment's flow, run here
            assert [d["version"] for d in reminded["expired"]] == ["1"]
            assert [(e["version"], e["days_left"]) for e in reminded["expiring"]] == [("2", 12)]
            with get_client(sync_client=True) as client:
                window = EventOccurredFilter(since=started - timedelta(minutes=1),
                                             until=datetime.now(timezone.utc) + timedelta(minutes=1))
                flt = EventFilter(occurred=window,
                                  resource=EventResourceFilter(id_prefix=[f"adaptrail.model-version.{model}."]))
                got = _poll("all 8 events stored on the server",
                            lambda: (lambda evs: evs if len(evs) >= 8 else None)(client.read_events(flt, 50).events),
                            60)
            notice = _check_stored(model, got)
            (message,) = _poll("the automation's notification", lambda: list(received), 60)
        finally:
            with get_client(sync_client=True) as client:
                client.delete_automation(automation.id)
            APILogWorker.drain_all(timeout=10)  # the flow run's logs, while the server is still up
    assert message["subject"] == f"adaptrail: approval of {model} v2 expires {notice.payload['review_due']}"
    assert f"must be re-reviewed by {notice.payload['review_due']} (12 days left)" in message["text"]
    assert f"adaptrail review {model}/2 --key YOUR_KEY" in message["text"] and "approved by bob" in message["text"]


def _decide(model: str, people, started: datetime, api: str) -> None:
    """v1 approved 200 days ago (overdue), v2 approved 170 days ago (due in 12 days), v3 rejected by a CLI command
    (a separate process, outside any flow)."""
    t0 = started - timedelta(days=200)
    v1, v2, v3 = seed(t0, model=model), seed(t0, model=model), seed(t0, model=model)
    assert (v1, v2, v3) == ("1", "2", "3")
    approvals.approve(model, v1, people["alice"], "good", now=t0 + timedelta(hours=1))
    approvals.approve(model, v2, people["bob"], "better", now=started - timedelta(days=170))
    env = {**os.environ, "PREFECT_API_URL": api}
    env.pop("ADAPTRAIL_NOTIFY_BLOCK", None)
    cli = subprocess.run([sys.executable, "-m", "flows.cli", "reject", f"{model}/{v3}", "--reason", "not needed",
                          "--key", str(Path(os.environ["ADAPTRAIL_HOME"]) / "keys" / "dave")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "not sent" not in cli.stderr


def _check_stored(model: str, got):
    seen = sorted((e.event, e.resource["adaptrail.version"]) for e in got)
    assert seen == sorted([("adaptrail.version.registered", "1"), ("adaptrail.version.registered", "2"),
                           ("adaptrail.version.registered", "3"), ("adaptrail.version.approved", "1"),
                           ("adaptrail.version.approved", "2"), ("adaptrail.version.expired", "1"),
                           ("adaptrail.version.rejected", "3"), ("adaptrail.approval.expiring", "2")])
    by = {(e.event, e.resource["adaptrail.version"]): e for e in got}
    for (name, version), e in by.items():
        assert e.resource.id == f"adaptrail.model-version.{model}.{version}" and e.resource["adaptrail.model"] == model
        assert int(e.resource["adaptrail.ledger.seq"]) == e.payload["ledger"]["seq"]
        assert [r.role for r in e.related][:2] == ["mlflow-run", "training-flow-run"]
        in_flow = name in ("adaptrail.version.expired", "adaptrail.approval.expiring")  # sent by approval_reminders
        assert ("flow-run" in {r.role for r in e.related}) == in_flow, (name, e.related)
    (last,) = [x for x in ledger("3", model) if x.action == "rejected"]
    rejected = by[("adaptrail.version.rejected", "3")]  # from the CLI process
    assert (rejected.resource["adaptrail.actor"], rejected.resource["adaptrail.approval.status"]) == ("dave", "rejected")
    assert rejected.payload["ledger"]["hash"] == last.hash and rejected.payload["reason"] == "not needed"
    expired = by[("adaptrail.version.expired", "1")]
    assert (expired.resource["adaptrail.approval.status"], expired.resource["adaptrail.actor"]) == ("expired", "pipeline")
    expiring = by[("adaptrail.approval.expiring", "2")]
    (approved,) = [x for x in ledger("2", model) if x.action == "approved"]
    assert expiring.resource["adaptrail.review.due"] == approved.extra["tags"][Tag.REVIEW_DUE]
    assert expiring.resource["adaptrail.approval.status"] == "approved" and expiring.payload["days_left"] == 12
    assert expiring.resource["adaptrail.ledger.seq"] == str(approved.seq) and expiring.payload["approved_by"] == "bob"
    return expiring
