"""MLflow: the tracking run that holds a flow's evidence, and the registered model version of an adapter."""

from __future__ import annotations

import json
import logging
import tempfile
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import OperationalError

from tasks.core import state
from tasks.core.errors import AdaptrailError, InputError
from tasks.data.splits import DatasetSplits
from tasks.core.names import Tag

log = logging.getLogger("adaptrail")

_KEY_OK = re.compile(r"[^0-9A-Za-z_\-. /]")
MAX_PARAM_VALUE = 6000


def client() -> MlflowClient:
    """A client of the configured store (``state.tracking_uri()``); MLflow's process-wide tracking URI is left
    alone: every read and write here names its store explicitly."""
    uri = state.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def metric_key(*parts: str) -> str:
    """A valid MLflow metric key from parts (label names may hold any character)."""
    return ".".join(_KEY_OK.sub("_", p) for p in parts)


def ensure_experiment(c: MlflowClient, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = state.artifact_root()
    try:
        return c.create_experiment(name, artifact_location=f"{root.rstrip('/')}/{name}" if root else None)
    except MlflowException:  # created concurrently
        return c.get_experiment_by_name(name).experiment_id


def start_run(c: MlflowClient, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    run = c.create_run(ensure_experiment(c, experiment), run_name=run_name, tags=tags)
    return run.info.run_id


def end_run(c: MlflowClient, run_id: str, ok: bool) -> None:
    c.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def log_params(c: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items()]
    for k in range(0, len(items), 100):
        c.log_batch(run_id, params=items[k:k + 100])


def log_metrics(c: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    for k in range(0, len(items), 500):
        c.log_batch(run_id, metrics=items[k:k + 500])


def set_run_tags(c: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_path(c: MlflowClient, run_id: str, local: Path, artifact_path: str | None = None) -> None:
    """Log a file or a directory's contents under ``artifact_path``."""
    if local.is_dir():
        c.log_artifacts(run_id, str(local), artifact_path)
    else:
        c.log_artifact(run_id, str(local), artifact_path)


def artifact_uri(c: MlflowClient, run_id: str, path: str) -> str:
    return c.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + path


def local_path_of(uri: str) -> Path | None:
    """The local file path behind a file:// (or plain path) artifact URI; None for remote stores."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def log_datasets(c: MlflowClient, run_id: str, splits: DatasetSplits) -> None:
    """Each split as an MLflow dataset input (name, digest, source, context)."""
    inputs = []
    for context, frame in splits.frames().items():
        with warnings.catch_warnings():  # a local path matches two equivalent MLflow source types
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(frame, source=splits.source, targets="label",
                                         name=f"{Path(splits.source).stem}-{context}")
        inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]))
    c.log_inputs(run_id, datasets=inputs)


def ensure_registered_model(c: MlflowClient, name: str, description: str = "") -> None:
    try:
        c.get_registered_model(name)
    except MlflowException:
        try:
            c.create_registered_model(name, description=description or None)
        except MlflowException:  # created concurrently
            c.get_registered_model(name)


def versions_of_run(c: MlflowClient, name: str, run_id: str, flow_run_id: str) -> list[ModelVersion]:
    """Versions of ``name`` created from this MLflow run by this flow run (tag ``lineage.flow_run_id``), oldest
    first."""
    found = c.search_model_versions(f"run_id='{run_id}'")  # run ids are hex: no quoting issue, unlike names
    mine = [v for v in found if v.name == name and v.tags.get(Tag.FLOW_RUN_ID) == flow_run_id]
    return sorted(mine, key=lambda v: int(v.version))


def register_version(c: MlflowClient, name: str, run_id: str, source: str, tags: dict[str, str],
                     description: str = "") -> ModelVersion:
    """One adapter = one version, created with its fact tags (the approval state is mirrored from the ledger after
    the register step records it there).

    Idempotent per flow run: a retried register step gets the version its earlier attempt created (same run id
    and ``lineage.flow_run_id``) instead of a second one. If an HTTP retry of the create call itself made a
    duplicate (the server committed it but the answer was lost), the later copies are deleted: they have no
    ledger event yet, and the earliest is the one every retry returns.
    """
    ensure_registered_model(c, name, "adaptrail adapters for one use case")
    flow_run = tags.get(Tag.FLOW_RUN_ID)
    if flow_run:
        existing = versions_of_run(c, name, run_id, flow_run)
        if existing:
            log.info("model %s version %s already registered by flow run %s; reusing it", name,
                     existing[0].version, flow_run)
            return existing[0]
    created = c.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description or None)
    if not flow_run:
        return created
    first, *extra = versions_of_run(c, name, run_id, flow_run) or [created]
    for dup in extra:
        log.warning("deleting duplicate model %s version %s (same flow run %s as version %s)", name, dup.version,
                    flow_run, first.version)
        c.delete_model_version(name, dup.version)
    return first


def is_transient(err: BaseException | None) -> bool:
    """A server or network failure worth retrying (MLflow unreachable after its own HTTP retries, a lost database
    connection, or :class:`StoreUnreadable` after this module's own retries); never a refusal, a bad input or a
    failed gate."""
    if isinstance(err, (OperationalError, StoreUnreadable)):
        return True
    if isinstance(err, MlflowException):
        msg = str(err.message if hasattr(err, "message") else err)
        return "failed with exception" in msg or "failed with timeout exception" in msg
    return isinstance(err, (ConnectionError, TimeoutError))


READ_ATTEMPTS = 3
READ_BACKOFF_S = 1.0

T = TypeVar("T")


class StoreUnreadable(AdaptrailError):
    """The tracking server or registry store could not be read after retrying; nothing was assumed about it."""


def read(what: str, fn: Callable[[], T], attempts: int = READ_ATTEMPTS) -> T:
    """``fn()`` (a registry or tracking read), retried with backoff while the failure is transient; after the last
    attempt a :class:`StoreUnreadable` naming ``what`` and the store. Other errors pass through unchanged."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (MlflowException, OperationalError, ConnectionError, TimeoutError) as err:
            if not is_transient(err):
                raise
            if attempt == attempts:
                raise StoreUnreadable(f"could not read {what} from {state.tracking_uri()} after {attempts} attempts "
                                      f"({type(err).__name__}: {err}); check that the tracking server is up and "
                                      "run the command again") from err
            log.warning("reading %s failed (%s); retrying", what, err)
            time.sleep(READ_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def is_not_found(err: MlflowException) -> bool:
    """MLflow's answer that a model, version, alias, run or artifact does not exist (not a failure to read)."""
    code = getattr(err, "error_code", "")
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        return True
    # an alias that is not set is answered as an invalid parameter ("Registered model alias X not found")
    return code == "INVALID_PARAMETER_VALUE" and "alias" in str(err) and "not found" in str(err)


def version_by_alias(c: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``alias`` points to; None when the model or the alias does not exist. Any other failure (a
    server that cannot be reached, a broken store) is raised, never read as "no such alias"."""
    try:
        return read(f"alias {name}@{alias}", lambda: c.get_model_version_by_alias(name, alias))
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def run_metrics(c: MlflowClient, run_id: str | None) -> dict[str, float] | None:
    """The latest metrics of a run; None when the run no longer exists (deleted). Other failures raise."""
    if not run_id:
        return None
    try:
        return dict(read(f"run {run_id}", lambda: c.get_run(run_id)).data.metrics)
    except MlflowException as err:
        if is_not_found(err):
            return None
        raise


def download_run_file(c: MlflowClient, run_id: str, path: str, dst_dir: str | Path) -> Path | None:
    """The artifact file ``path`` of a run, downloaded under ``dst_dir``; None when the run has no such file (e.g.
    logged before it existed). A failure to list or download is raised, not read as "missing"."""
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    listed = read(f"artifacts of run {run_id}", lambda: c.list_artifacts(run_id, folder or None))
    if path not in {f.path for f in listed}:
        return None
    return Path(read(f"{path} of run {run_id}", lambda: c.download_artifacts(run_id, path, str(dst_dir))))


def read_run_text(c: MlflowClient, run_id: str, path: str) -> str | None:
    """The text of the artifact ``path`` of a run (None when it has none; see :func:`download_run_file`)."""
    with tempfile.TemporaryDirectory(prefix="adaptrail-artifact-") as tmp:
        local = download_run_file(c, run_id, path, tmp)
        return None if local is None else local.read_text(encoding="utf-8")


def read_run_json(c: MlflowClient, run_id: str, path: str) -> Any | None:
    """The JSON artifact ``path`` of a run; None when the run has no such file (see :func:`download_run_file`)."""
    text = read_run_text(c, run_id, path)
    return None if text is None else json.loads(text)


def set_alias(c: MlflowClient, name: str, alias: str, version: str) -> None:
    c.set_registered_model_alias(name, alias, version)


def model_version(c: MlflowClient, model: str, version: str):
    """The registered version, or an InputError naming what is missing."""
    if not isinstance(model, str) or not model.strip():
        raise InputError("give the registered model name, e.g. support-ticket-router")
    if not str(version).isdigit():
        raise InputError(f"version must be a number (got {version!r}), e.g. 3")
    try:
        return read(f"{model} v{version}", lambda: c.get_model_version(model, str(version)))
    except MlflowException as err:
        if not is_not_found(err):  # a broken or unreachable store is not a missing version
            raise
        raise InputError(f"{model} v{version} is not in the MLflow registry at {state.tracking_uri()}; "
                         "list versions in the MLflow UI (Models)") from None
