"""The review flow's pause form round-trips through Prefect's API and records the decision like the CLI does."""

from __future__ import annotations

import base64
import re
import threading
import time
from datetime import datetime, timezone

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowRunFilter
from prefect.flow_runs import resume_flow_run
from prefect.input.actions import read_flow_run_input

from flows.review_adapter import request_approval, review_adapter
from tests.builders import setup_people
from tasks.governance import approvals
from tasks.governance import registry
from tasks.core.config import ApprovalConfig
from tasks.governance.ledger import Ledger
from tasks.core.names import ALIAS_CHAMPION, GATES, Tag

pytestmark = pytest.mark.integration

MODEL = "router"
NOW = datetime.now(timezone.utc)


P: dict = {}  # name -> Signer of the test policy


@pytest.fixture
def home(home):
    P.clear()
    P.update(setup_people(home))
    return home


def seed() -> str:
    c = registry.client()
    run_id = registry.start_run(c, "tests", "train", {})
    registry.log_metrics(c, run_id, {"test_macro_f1": 0.81, "test_accuracy": 0.84})
    gates = {g: "passed" for g in GATES}
    tags = {Tag.APPROVAL_STATUS: "pending", Tag.APPROVAL_BY: "adaptrail/gates",
            Tag.APPROVAL_AT: NOW.isoformat(timespec="seconds"), Tag.APPROVAL_REASON: "registered",
            Tag.REVIEW_DUE: "2099-01-01", Tag.REQUESTED_BY: "carol", Tag.ADAPTER_DIGEST: "a" * 64,
            Tag.BASE_MODEL: "tiny", Tag.BASE_MODEL_DIGEST: "b" * 64, Tag.DATASET_DIGEST: "d" * 64} | \
        {Tag.gate(g): o for g, o in gates.items()}
    mv = registry.register_version(c, MODEL, run_id, registry.artifact_uri(c, run_id, "adapter"), tags)
    approvals.record_registration(MODEL, mv.version, "pending", gates, {"gates": gates}, "carol")
    return str(mv.version)


def paused_run(thread: threading.Thread, out: dict, timeout: float = 90, after: set | None = None):
    """The paused review_adapter flow run, once it is waiting for input (a pause other than those in ``after``)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline and thread.is_alive():
            runs = client.read_flow_runs(flow_filter=FlowFilter(name={"any_": ["review_adapter"]}),
                                         flow_run_filter=FlowRunFilter(state={"type": {"any_": ["PAUSED"]}}))
            runs = [r for r in runs if r.state.state_details.pause_key not in (after or set())]
            if runs:
                return runs[0]
            time.sleep(0.3)
    raise AssertionError(f"review_adapter never paused: {out}")


def in_background(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target():
        try:
            out["result"] = fn(*args, **kwargs)
        except BaseException as err:  # surfaced by the test
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def answer_and_get_statement(thread, out, answer: dict):
    """Resume the first form with ``answer``; return the second pause (the signing request) and its statement."""
    run = paused_run(thread, out)
    first_key = run.state.state_details.pause_key
    resume_flow_run(run.id, run_input=answer)
    run = paused_run(thread, out, after={first_key})
    description = read_flow_run_input(run.state.state_details.run_input_keyset["description"], run.id)
    statement = re.search(r"adaptrail sign --key \S+ (\S+)", description).group(1)
    return run, description, statement


def test_the_pause_form_round_trips_and_a_signed_decision_lands_in_ledger_and_tags(prefect_harness, home, cli,
                                                                                     capsys):
    v = seed()
    thread, out = in_background(review_adapter, MODEL, v, timeout_seconds=120, poll_interval_seconds=1)
    run = paused_run(thread, out)
    keys = run.state.state_details.run_input_keyset
    description = read_flow_run_input(keys["description"], run.id)
    assert f"## Review {MODEL} v{v}" in description and "| bias | passed |" in description
    assert "| test_macro_f1 | 0.8100 | n/a | n/a |" in description and "requested by **carol**" in description

    run, description, statement = answer_and_get_statement(
        thread, out, {"decision": "approve", "approver": "bob", "reason": "evidence is solid"})
    assert '"actor": "bob"' in description and '"reason": "evidence is solid"' in description
    assert cli(["sign", statement, "--key", P["bob"].source]) == 0  # what bob runs on his machine
    signature = capsys.readouterr().out.strip()
    resume_flow_run(run.id, run_input={"signature": signature})
    thread.join(60)
    assert "error" not in out, out.get("error")
    assert out["result"]["action"] == "approved" and out["result"]["actor"] == "bob"
    with Ledger() as led:
        last = led.latest(MODEL, v)
    assert (last.action, last.actor, last.reason) == ("approved", "bob", "evidence is solid")
    mv = registry.client().get_model_version(MODEL, v)
    assert mv.tags[Tag.APPROVAL_STATUS] == "approved" and mv.tags[Tag.APPROVAL_BY] == "bob"
    assert registry.version_by_alias(registry.client(), MODEL, ALIAS_CHAMPION).version == int(v)


@pytest.mark.parametrize("signed_by", ["nobody", "alice"])
def test_a_form_submission_without_the_approvers_valid_signature_is_refused(prefect_harness, home, signed_by):
    """A garbage signature, or alice's valid signature of bob's statement: the run fails, nothing is recorded."""
    v = seed()
    thread, out = in_background(review_adapter, MODEL, v, timeout_seconds=120, poll_interval_seconds=1,
                                return_state=True)
    run, _, statement = answer_and_get_statement(
        thread, out, {"decision": "approve", "approver": "bob", "reason": "evidence is solid"})
    signature = "bm90IGEgc2lnbmF0dXJl" if signed_by == "nobody" else P["alice"].sign(base64.b64decode(statement))
    resume_flow_run(run.id, run_input={"signature": signature})
    thread.join(60)
    state = out["result"]
    assert state.is_failed() and "refused (signature)" in state.message, state.message
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered"]
    assert registry.client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "pending"


def test_a_refused_answer_fails_the_run_and_changes_nothing(prefect_harness, home):
    v = seed()
    thread, out = in_background(review_adapter, MODEL, v, timeout_seconds=120, poll_interval_seconds=1,
                                return_state=True)
    run = paused_run(thread, out)
    resume_flow_run(run.id, run_input={"decision": "approve", "approver": "carol", "reason": "my own work"})  # refused
    # before any statement is shown: the rules are checked first
    thread.join(60)
    state = out["result"]
    assert state.is_failed() and "separation-of-duties" in state.message
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered"]


def test_the_in_flow_step_times_out_leaving_the_version_pending(prefect_harness, home):
    v = seed()
    outcome = request_approval(MODEL, v, ApprovalConfig(timeout_seconds=2))
    assert outcome["action"] is None and outcome["status"] == "pending"
    assert "stays pending" in outcome["message"]
    with Ledger() as led:
        assert [e.action for e in led.events(model=MODEL, version=v)] == ["registered"]
    assert registry.client().get_model_version(MODEL, v).tags[Tag.APPROVAL_STATUS] == "pending"
