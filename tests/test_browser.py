"""The browser journey of a reviewer, in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
trigger ``train_adapter`` from the deployment's run form in the Prefect UI, answer the review form the run pauses
with (decision, then signature), and find the version's approval on its MLflow model-version page.

Screenshots of each step are saved under ``test-artifacts/browser/`` (or ``$ADAPTRAIL_TEST_ARTIFACTS/browser``).
Without a Chromium the test skips with a message, except under ``ADAPTRAIL_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tasks.core.config_files import load_config
from tests.servers import FAST, ROOT, tail, wait_for_deployment

pytestmark = pytest.mark.integration

MODEL = "browser-router"
ARTIFACTS = Path(os.environ.get("ADAPTRAIL_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"


def chromium() -> str:
    """The Chromium binary; skips (or fails under ADAPTRAIL_REQUIRE_BROWSER=1) when there is none."""
    for candidate in (os.environ.get("ADAPTRAIL_CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    message = "no Chromium found: install Debian's `chromium` (apt-get install chromium) or set ADAPTRAIL_CHROMIUM"
    if os.environ.get("ADAPTRAIL_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def wait_for_run(client, predicate, what: str, timeout: float, log: Path):
    """The first flow run matching ``predicate`` (polled through the API), or fail with the serve log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in client.read_flow_runs():
            if predicate(run):
                return run
        time.sleep(1)
    pytest.fail(f"no flow run {what} within {timeout:.0f} s; serve log:\n{tail(log)}")


def resume(page, prefect_url: str, run_id) -> object:
    """Open the paused flow run's page, press Resume, and return the form's dialog."""
    page.goto(f"{prefect_url}/runs/flow-run/{run_id}")
    page.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Submit").wait_for()
    return dialog


class Journey:
    """A page plus numbered screenshots and a readable failure (the page's text) when a step does not happen."""

    def __init__(self, page, out: Path):
        self.page, self.out, self.n = page, out, 0

    def shot(self, name: str) -> Path:
        self.n += 1
        path = self.out / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def text(self) -> str:
        return self.page.inner_text("body")


@pytest.mark.timeout(600)
def test_a_reviewer_runs_approves_and_checks_the_version_in_the_browser(servers, served, tickets_csv, tiny_bert,
                                                                          monkeypatch):
    from playwright.sync_api import sync_playwright
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.builders import people_now

    binary = chromium()
    monkeypatch.setenv("ADAPTRAIL_HOME", str(servers["home"]))
    people = people_now()  # the signed policy in the servers' ledger; bob approves, carol requested
    config = load_config(ROOT / "configs" / "tiny.yaml",
                         [f"data.path={tickets_csv}", f"model.base={tiny_bert}", *FAST, f"registry.model_name={MODEL}",
                          "approval.in_flow=true", "approval.timeout_seconds=300"]).model_dump(mode="json")
    parameters = {"config": config, "requested_by": "carol", "request": None}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()

    with temporary_settings(updates={PREFECT_API_URL: servers["prefect"] + "/api"}), \
            get_client(sync_client=True) as client, sync_playwright() as pw:
        wait_for_deployment("train_adapter/local", served)
        deployment = client.read_deployment_by_name("train_adapter/local")
        browser = pw.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        j = Journey(page, ARTIFACTS)
        try:
            # 1. the deployment's page -> Run -> Custom run: the form, switched to JSON, with the tiny config
            page.goto(f"{servers['prefect']}/deployments/deployment/{deployment.id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            page.get_by_text("Run Name", exact=True).wait_for()
            page.get_by_text("Parameters", exact=True).locator("..").locator("button").first.click()
            page.get_by_text("Use JSON input").click()
            page.locator("textarea.p-code-input__textarea").fill(json.dumps(parameters, indent=2))
            j.shot("custom-run-form")
            page.get_by_role("button", name="Submit", exact=True).click()

            # 2. the run trains, registers, and pauses in the review step (a review_adapter subflow)
            started = wait_for_run(client, lambda r: r.deployment_id == deployment.id and r.parameters.get(
                "config", {}).get("registry", {}).get("model_name") == MODEL, "of train_adapter", 60, served)
            paused = wait_for_run(client, lambda r: r.state and r.state.is_paused() and r.parent_task_run_id,
                                  "paused for review", 300, served)
            form = resume(page, servers["prefect"], paused.id)
            assert "Review browser-router v1" in form.inner_text() and "requested by carol" in form.inner_text()
            form.locator(".p-select-button__control").first.focus()  # Prefect's own select: the keyboard opens it
            page.keyboard.press("ArrowDown")
            page.locator(".p-select-option", has_text=re.compile(r"^approve$")).click()
            fields = form.locator("textarea")
            fields.nth(0).fill("bob")
            fields.nth(1).fill("evidence is solid")
            j.shot("review-form")
            form.get_by_role("button", name="Submit").click()

            # 3. the second form shows the statement to sign; bob signs it on his machine and pastes the line
            signing = wait_for_run(client, lambda r: r.id == paused.id and r.state.is_paused()
                                   and r.state.state_details.pause_key != paused.state.state_details.pause_key,
                                   "paused for the signature", 120, served)
            form = resume(page, servers["prefect"], signing.id)
            statement = re.search(r"adaptrail sign --key \S+ (\S+)", form.inner_text()).group(1)
            form.locator("textarea").first.fill(people["bob"].sign(base64.b64decode(statement)))
            j.shot("signature-form")
            form.get_by_role("button", name="Submit").click()
            done = wait_for_run(client, lambda r: r.id == started.id and r.state.is_final(), "finished", 180, served)
            assert done.state.is_completed(), f"{done.state}; serve log:\n{tail(served)}"
            page.goto(f"{servers['prefect']}/runs/flow-run/{started.id}")
            page.get_by_text("Completed").first.wait_for()
            j.shot("train-run-completed")

            # 4. the MLflow UI: the version page shows the approval the reviewer just signed
            page.goto(f"{servers['mlflow']}/#/models/{MODEL}/versions/1")
            page.get_by_text("adaptrail.approval.status").first.wait_for()
            j.shot("mlflow-model-version")
            text = j.text()
            assert re.search(r"adaptrail\.approval\.status\s*approved", text), text[-3000:]
            assert re.search(r"adaptrail\.approval\.by\s*bob", text), text[-3000:]
        except Exception:
            j.shot("failure")
            print(j.text())
            raise
        finally:
            browser.close()
