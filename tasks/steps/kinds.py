"""The task-kind step table of ``train_adapter``: what differs between task kinds (data, training, evaluation,
champion, bias and regression gates), typed by what each step takes and returns, so a reader or a tool can follow
the pipeline into each kind (the tables are ``CLASSIFICATION`` and
``CAUSAL_LM`` in the kinds' modules; ``flows/train_adapter.py`` picks one by ``model.task``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from prefect import Task

from tasks.core.config import Config
from tasks.data.splits import DatasetSplits
from tasks.gates.decision import GateDecision
from tasks.training.recipe import TrainedAdapter

if TYPE_CHECKING:
    from tasks.steps.common import RunContext


class Evaluated(Protocol):
    """An evaluation of either kind: its headline test metric and the run summary's metrics."""

    def headline_metric(self) -> tuple[str, float]: ...

    def summary_metrics(self) -> dict[str, float]: ...


E = TypeVar("E", bound=Evaluated)  # the kind's evaluation
C = TypeVar("C")  # the kind's champion evidence


@dataclass(frozen=True)
class TaskSteps(Generic[E, C]):
    """The task-specific steps of ``train_adapter``; validation, registration and the summary are shared."""

    load_data: Task[[Config], DatasetSplits]
    train: Task[[RunContext], TrainedAdapter]
    evaluate: Task[[RunContext, TrainedAdapter], E]
    evaluate_champion: Task[[RunContext], C | None]
    bias_gate: Task[[RunContext, TrainedAdapter, E, C | None], GateDecision]
    regression_gate: Task[[RunContext, TrainedAdapter, E, C | None], GateDecision]

