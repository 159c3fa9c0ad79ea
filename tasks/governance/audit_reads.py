"""What the audit reads from the MLflow registry, paged and in bulk: model names, every version of a model, and the
runs behind the versions (one search per 100 run ids instead of one read per version)."""

from __future__ import annotations

from tasks.core.errors import InputError
from tasks.governance import registry

_PAGE = 1000
_RUNS_PER_SEARCH = 100


def model_names(c, model: str | None) -> list[str]:
    if model is not None:
        found = c.search_registered_models(filter_string=f"name = '{_quote(model)}'")
        if not found:
            raise InputError(f"no registered model named {model!r}; omit --model to audit every model")
        return [model]
    names, token = [], None
    while True:
        page = c.search_registered_models(max_results=_PAGE, page_token=token)
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def versions(c, name: str) -> list:
    out, token = [], None
    while True:
        page = c.search_model_versions(f"name = '{_quote(name)}'", max_results=_PAGE, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda mv: int(mv.version))


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def read_runs(c, run_ids: set[str], metrics: dict[str, dict[str, float]], roots: dict[str, str]) -> None:
    """Read runs in bulk (one search per 100 ids, over every experiment, deleted runs included) into ``metrics`` and
    ``roots``; a run the search does not return is read on its own by the audit (which tells a run that is gone
    from a store that cannot be read)."""
    from mlflow.entities import ViewType

    if not run_ids:
        return
    experiments, token = [], None
    while True:
        page = registry.read("experiments", lambda: c.search_experiments(ViewType.ALL, _PAGE, page_token=token))
        experiments += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    ids = sorted(run_ids)
    for start in range(0, len(ids), _RUNS_PER_SEARCH):
        chunk = ids[start:start + _RUNS_PER_SEARCH]
        where = "attributes.run_id IN (" + ", ".join(f"'{i}'" for i in chunk if i.isalnum()) + ")"
        for run in registry.read("runs", lambda: c.search_runs(experiments, where, ViewType.ALL, len(chunk))):
            metrics[run.info.run_id] = dict(run.data.metrics)
            roots[run.info.run_id] = run.info.artifact_uri
