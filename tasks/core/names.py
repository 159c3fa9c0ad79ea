"""Names that are a contract between code, tests and users (see README "Names")."""

from __future__ import annotations

from enum import StrEnum

TAG_PREFIX = "adaptrail."


class Tag:
    """MLflow model-version tag keys, all prefixed ``adaptrail.``."""

    APPROVAL_STATUS = TAG_PREFIX + "approval.status"
    APPROVAL_BY = TAG_PREFIX + "approval.by"
    APPROVAL_AT = TAG_PREFIX + "approval.at"
    APPROVAL_REASON = TAG_PREFIX + "approval.reason"
    REVIEW_DUE = TAG_PREFIX + "review.due"
    GATE_VALIDATION = TAG_PREFIX + "gate.validation"
    GATE_BIAS = TAG_PREFIX + "gate.bias"
    GATE_REGRESSION = TAG_PREFIX + "gate.regression"
    DATASET_DIGEST = TAG_PREFIX + "lineage.dataset.digest"
    BASE_MODEL = TAG_PREFIX + "lineage.base_model"
    BASE_MODEL_REVISION = TAG_PREFIX + "lineage.base_model.revision"
    BASE_MODEL_DIGEST = TAG_PREFIX + "lineage.base_model.digest"
    CODE_VERSION = TAG_PREFIX + "lineage.code.version"
    FLOW_RUN_ID = TAG_PREFIX + "lineage.flow_run_id"
    REQUESTED_BY = TAG_PREFIX + "lineage.requested_by"
    ADAPTER_DIGEST = TAG_PREFIX + "adapter.digest"
    PEFT_METHOD = TAG_PREFIX + "peft.method"
    PEFT_TRAINABLE_PARAMS = TAG_PREFIX + "peft.trainable_params"
    PEFT_TRAINABLE_FRACTION = TAG_PREFIX + "peft.trainable_fraction"

    @classmethod
    def gate(cls, gate: str) -> str:
        return TAG_PREFIX + f"gate.{gate}"


#: Every tag DESIGN.md defines; a registered version carries all of them.
ALL_TAGS: tuple[str, ...] = tuple(
    v for k, v in vars(Tag).items() if k.isupper() and isinstance(v, str)
)


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REVIEW_REQUIRED = "review_required"  # monitoring found a breach: a person reviews it before the next audit


class GateOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


GATES: tuple[str, ...] = ("validation", "bias", "regression")

#: Actor names the pipeline records in the ledger and in ``approval.by`` (people are recorded by their identity).
ACTOR_GATES = "adaptrail/gates"  # the gates' verdict at registration
ACTOR_EXPIRY = "adaptrail/expiry"  # an approval past its review date, expired by the audit

#: Audit finding severities, worst first (``adaptrail audit --fail-on``).
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")

#: Days an approval lasts before it must be reviewed again (``registry.review_period_days`` by default).
DEFAULT_REVIEW_PERIOD_DAYS = 182
#: The longest review period anyone may set (config, environment): an approval older than this is always overdue.
MAX_REVIEW_PERIOD_DAYS = 366

ALIAS_CHAMPION = "champion"
ALIAS_CANDIDATE = "candidate"

#: MLflow experiment of the compliance audit's runs (each also records the ledger head it saw: a checkpoint).
AUDIT_EXPERIMENT = "adaptrail-audits"
RUN_TAG_AUDIT_LEDGER = TAG_PREFIX + "audit.ledger_id"  # the audited ledger (hash of its first row)
RUN_TAG_AUDIT_HEAD = TAG_PREFIX + "audit.ledger_head_hash"
#: MLflow experiment of the monitoring runs; each run names the version it watched (model, version tags).
MONITOR_EXPERIMENT = "adaptrail-monitoring"
RUN_TAG_MONITOR_MODEL = TAG_PREFIX + "monitor.model"
RUN_TAG_MONITOR_VERSION = TAG_PREFIX + "monitor.version"
RUN_TAG_MONITOR_OUTCOME = TAG_PREFIX + "monitor.outcome"
#: Model-version tag: the last monitoring run (outcome, time, run id); informational, the ledger holds the record.
TAG_MONITOR_LAST = TAG_PREFIX + "monitoring.last"

# Run artifact paths (relative to the MLflow run's artifact root).
ARTIFACT_CONFIG = "config.yaml"
ARTIFACT_VALIDATION = "validation"
ARTIFACT_ADAPTER = "adapter"
ARTIFACT_REPORTS = "reports"

# Files inside a saved adapter directory.
ADAPTER_MANIFEST = "manifest.json"
ADAPTER_METADATA = "adaptrail.json"

# Run tags (on the MLflow run, not the model version).
RUN_TAG_FLOW_RUN_ID = TAG_PREFIX + "flow_run_id"
RUN_TAG_STAGE = TAG_PREFIX + "stage"
RUN_TAG_CHAMPION = TAG_PREFIX + "compared_with_champion"  # the champion version the gates compared against
RUN_TAG_CHAMPION_SKIPPED = TAG_PREFIX + "champion_skipped"  # why an unloadable champion was skipped (policy)
