"""``training.search``: a seeded Optuna search over learning rate, rank and target modules, chosen on validation.

Plain logic: which choices apply to the configured method (:func:`space`), a config with one trial's settings
(:func:`apply`), and the search loop (:func:`search`), which asks the sampler for a batch of trials, hands them to a
``train_batch`` callable (the steps layer trains each in its own MLflow child run, fanned out by a Prefect task
runner) and tells it the validation scores. Batches of a fixed size keep the sequence of trials, and so the result,
the same on every run with the same seed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from tasks.core.config import Config
from tasks.core.peft_config import METHOD_OPTIONS

log = logging.getLogger("adaptrail")


@dataclass
class Trial:
    """One trial: its settings, the validation score of the epoch it kept, and where it was recorded."""

    number: int
    params: dict[str, Any]
    value: float
    run_id: str = ""
    repeated: bool = False  # the sampler proposed settings already trained: scored without training again


@dataclass
class SearchResult:
    metric: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial:
        """The best score; ties go to the earlier trial."""
        return max(self.trials, key=lambda t: (t.value, -t.number))

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "best": asdict(self.best), "trials": [asdict(t) for t in self.trials]}


def space(config: Config) -> dict[str, list[Any]]:
    """The choices of this search that the configured method reads (learning rate always)."""
    s, reads = config.training.search, METHOD_OPTIONS[config.peft.method]
    out: dict[str, list[Any]] = {"learning_rate": list(s.learning_rate)}
    if "r" in reads:
        out["r"] = list(s.r)
    if "target_modules" in reads:
        out["target_modules"] = list(s.target_modules)
    return out


def apply(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with one trial's settings: alpha keeps its ratio to r; the trial itself searches nothing."""
    peft = dict(config.peft.model_dump())
    if "r" in params:
        peft["alpha"] = config.peft.alpha / config.peft.r * params["r"]
        peft["r"] = params["r"]
    if "target_modules" in params:
        peft["target_modules"] = [m.strip() for m in str(params["target_modules"]).split(",") if m.strip()]
    training = config.training.model_copy(update={"learning_rate": params["learning_rate"],
                                                  "search": config.training.search.model_copy(update={"trials": 0})})
    return config.model_copy(update={"peft": type(config.peft).model_validate(peft), "training": training})


#: (trial number, its config) for each trial of a batch -> (validation score, run id) for each, in order.
TrainBatch = Callable[[list[tuple[int, Config]]], list[tuple[float, str]]]


def search(config: Config, train_batch: TrainBatch, metric: str = "val_macro_f1") -> SearchResult:
    """Run ``training.search.trials`` trials (maximising ``metric``) in batches of ``training.search.parallel``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = config.training.search
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=s.seed))
    choices, result, seen = space(config), SearchResult(metric), {}
    while len(result.trials) < s.trials:
        asked = [study.ask() for _ in range(min(s.parallel, s.trials - len(result.trials)))]
        params = [{name: t.suggest_categorical(name, options) for name, options in choices.items()} for t in asked]
        keys = [tuple(sorted(p.items())) for p in params]
        fresh: list[tuple[int, Config, tuple]] = []
        for t, p, k in zip(asked, params, keys):
            if k not in seen and all(k != f[2] for f in fresh):
                fresh.append((t.number, apply(config, p), k))
        outcomes = train_batch([(n, c) for n, c, _ in fresh]) if fresh else []
        for (number, _, k), (value, run_id) in zip(fresh, outcomes):
            seen[k] = (value, run_id, number)
        for t, p, k in zip(asked, params, keys):
            value, run_id, first = seen[k]
            study.tell(t, value)
            result.trials.append(Trial(t.number, p, value, run_id, repeated=first != t.number))
            log.info("search trial %d %s: %s=%.4f%s", t.number, p, metric, value,
                     " (repeated settings: not trained again)" if first != t.number else "")
    return result
