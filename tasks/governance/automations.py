"""The Prefect automation adaptrail ships (``infra/prefect/automations/approval-expiring.yaml``: notify people when an
approval expires within 14 days), loaded with the notification block a user names and applied to a Prefect server
idempotently, by name (``adaptrail serve`` applies it when ``ADAPTRAIL_NOTIFY_BLOCK`` is set)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import yaml

from tasks.core.errors import InputError

if TYPE_CHECKING:
    from prefect.events.schemas.automations import AutomationCore

ROOT = Path(__file__).resolve().parents[2]
APPROVAL_EXPIRING = ROOT / "infra" / "prefect" / "automations" / "approval-expiring.yaml"
#: ``<block-type-slug>/<block-name>`` of the notification block the automation sends through.
NOTIFY_BLOCK_ENV = "ADAPTRAIL_NOTIFY_BLOCK"


def load(block_document_id: UUID | str, path: Path = APPROVAL_EXPIRING) -> "AutomationCore":
    """The automation in ``path`` (Prefect's automation schema), its notification actions sending through the
    block ``block_document_id``."""
    from prefect.events.schemas.automations import AutomationCore

    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    for action in spec.get("actions", []):
        if "block_document_id" in action:
            action["block_document_id"] = str(block_document_id)
    return AutomationCore.model_validate(spec)


def block_id(block: str) -> UUID:
    """The id of the block named ``<block-type-slug>/<block-name>`` on the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    slug, _, name = block.partition("/")
    if not slug or not name:
        raise InputError(f"{NOTIFY_BLOCK_ENV}={block!r} is not <block-type-slug>/<block-name>; name a notification "
                         "block, e.g. slack-webhook/governance")
    with get_client(sync_client=True) as client:
        try:
            return client.read_block_document_by_name(name, slug, include_secrets=False).id
        except ObjectNotFound:
            raise InputError(f"no {slug} block named {name!r} on the Prefect server ({NOTIFY_BLOCK_ENV}={block}); "
                             "create it in the Prefect UI (Blocks -> +) or fix the name") from None


def apply(automation: "AutomationCore") -> tuple[str, UUID]:
    """Create the automation on the Prefect server, or update the one of the same name (extra copies of that name
    are deleted); ``("created" | "updated", id)``."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = sorted(client.read_automations_by_name(automation.name), key=lambda a: str(a.id))
        if not existing:
            return "created", client.create_automation(automation)
        keep, *extra = existing
        client.update_automation(keep.id, automation)
        for other in extra:
            client.delete_automation(other.id)
        return "updated", keep.id


def apply_from_environment() -> str:
    """What ``adaptrail serve`` does: apply the approval-expiring automation with the block named by
    ``ADAPTRAIL_NOTIFY_BLOCK``; returns a line to print (how to turn it on, when that is unset)."""
    block = os.environ.get(NOTIFY_BLOCK_ENV, "").strip()
    if not block:
        return (f"automation 'approval expiring within 14 days' not applied: set {NOTIFY_BLOCK_ENV}="
                "<block-type-slug>/<block-name> (a notification block, Prefect UI -> Blocks) and restart serve")
    automation = load(block_id(block))
    how, automation_id = apply(automation)
    return f"automation {automation.name!r} {how} ({automation_id}), notifying through block {block}"
