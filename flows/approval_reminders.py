"""Approval reminders, daily: expire approvals past their review date (as the audit does; a Prefect event
``adaptrail.version.expired`` each), then announce the approvals due for review within 14 days
(``adaptrail.approval.expiring``), which the shipped automation turns into a notification."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.governance import approvals, events

# Expiry is idempotent (an expired version is not expired again); announcing is a notification: never retried.
step = task(cache_policy=NO_CACHE, retries=0)

#: 07:00 UTC every day, for a deployment of this flow.
DAILY_CRON = "0 7 * * *"


@step(name="expire-overdue")
def expire_overdue(model: str | None) -> list[dict[str, Any]]:
    return [d.to_dict() for d in approvals.expire_overdue(model)]


@step(name="announce-expiring")
def announce_expiring(model: str | None, within_days: int) -> list[dict[str, Any]]:
    return [{"model": e.resource[events.LABEL_MODEL], "version": e.resource[events.LABEL_VERSION],
             "review_due": e.payload["review_due"], "days_left": e.payload["days_left"]}
            for e in events.announce_expiring(model, within_days=within_days)]


@flow(name="approval_reminders", log_prints=True)
def approval_reminders(model: str | None = None,
                       within_days: int = events.EXPIRING_WITHIN_DAYS) -> dict[str, list[dict[str, Any]]]:
    """Expire overdue approvals, then send ``adaptrail.approval.expiring`` for each approval due within
    ``within_days`` days (of ``model``, or every model)."""
    expired = expire_overdue(model)
    expiring = announce_expiring(model, within_days)
    for d in expired:
        print(f"expired {d['model']} v{d['version']}: {d['reason']}")
    for e in expiring:
        print(f"announced {e['model']} v{e['version']}: review due {e['review_due']} ({e['days_left']} days left)")
    return {"expired": expired, "expiring": expiring}
