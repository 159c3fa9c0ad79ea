"""MLflow: the tracking run that holds a flow's evidence, and the registered model version of an adapter."""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import state
from tasks.data import DatasetSplits

_KEY_OK = re.compile(r"[^0-9A-Za-z_\-. /]")
MAX_PARAM_VALUE = 6000


def client() -> MlflowClient:
    uri = state.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def metric_key(*parts: str) -> str:
    """A valid MLflow metric key from parts (label names may hold any character)."""
    return ".".join(_KEY_OK.sub("_", p) for p in parts)


def ensure_experiment(c: MlflowClient, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = state.artifact_root().rstrip("/")
    try:
        return c.create_experiment(name, artifact_location=f"{root}/{name}")
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


def register_version(c: MlflowClient, name: str, run_id: str, source: str, tags: dict[str, str],
                     description: str = "") -> ModelVersion:
    """One adapter = one version; tags are set at creation so a version never exists without them."""
    ensure_registered_model(c, name, "adaptrail adapters for one use case")
    return c.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description or None)


def version_by_alias(c: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return c.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(c: MlflowClient, name: str, alias: str, version: str) -> None:
    c.set_registered_model_alias(name, alias, version)
