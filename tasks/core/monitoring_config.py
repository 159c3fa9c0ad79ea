"""The training config's ``monitoring:`` section (a part of :class:`tasks.core.config.Config`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.core.peft_config import Section


class MonitoringConfig(Section):
    """The requester's monitoring thresholds (names and meaning as in the signed policy's ``monitoring:``): each may
    only be stricter than the policy's; a looser one is ignored, and the monitoring report says so."""

    on_review_required: Literal["warn", "refuse"] | None = None
    max_prediction_psi: float | None = Field(None, gt=0)
    max_length_drift: float | None = Field(None, gt=0)
    max_oov_increase: float | None = Field(None, gt=0)
    max_embedding_auc: float | None = Field(None, gt=0.5, le=1.0)
    max_confidence_drop: float | None = Field(None, gt=0)
    max_accuracy_drop: float | None = Field(None, gt=0)
    max_macro_f1_drop: float | None = Field(None, gt=0)
