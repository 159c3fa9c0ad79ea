"""Reproducing a registered version: train it again from its recorded config, data and base in a scratch state, and
say whether the new adapter is byte-identical to the registered one (or how far its metrics are, and why).

The record comes from the ledger (the ``registered`` event's digests; tags are only a mirror) and the version's
MLflow run (``config.yaml``, test metrics, ``reports/environment.json``, the stored manifest). The data file the
config names must still have the recorded dataset digest and the base model its recorded digest, or nothing runs
(:class:`Refused`). Training runs in a scratch state (its own ``ADAPTRAIL_HOME``: MLflow store, ledger, keys) under
``out``, so the real registry gets no new version, while the new run, its logs and its adapter are kept there. The
result is a ``reproduced`` ledger event on the version, signed by the pipeline's service key; it sets no approval
state. The training itself is passed in (``run_training``: the flow), since flows sit above this package.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from mlflow.exceptions import MlflowException

from tasks.core import state
from tasks.core.canonical import json_sha256
from tasks.core.config import Config
from tasks.core.config_files import config_from_dict
from tasks.core.errors import InputError, Refused
from tasks.core.names import ARTIFACT_CONFIG, ARTIFACT_REPORTS, Tag
from tasks.governance import events, registry, trust
from tasks.governance.ledger import Ledger, LedgerEvent, LedgerTimeConflict
from tasks.governance.ledger_view import decision_time, identity_of, identity_problem, ledger_tags
from tasks.governance.loader import fetch_manifest
from tasks.training.adapter_files import file_map, recompute_digest
from tasks.training.environment import ENVIRONMENT_FILE, differences, training_environment
from tasks.training.model import resolve_base_model, weights_digest

log = logging.getLogger("adaptrail")

REPORT_FILE, LOG_FILE, STATE_DIR = "reproduction.json", "train.log", "state"
#: What the scratch state replaces: every location of the real one, and the keys (a fresh service key signs there).
SCRATCH_ENV = ("ADAPTRAIL_HOME", "MLFLOW_TRACKING_URI", "ADAPTRAIL_ARTIFACT_ROOT", "ADAPTRAIL_LEDGER_URL",
               "ADAPTRAIL_CHECKPOINTS", "ADAPTRAIL_SERVICE_KEY", "ADAPTRAIL_POLICY", "ADAPTRAIL_SIGNING_KEY")
LOGGERS = ("adaptrail", "prefect.flow_runs", "prefect.task_runs")
RunTraining = Callable[[Config, str], dict[str, Any]]  # (config, requested_by) -> the flow's summary


@dataclass
class Recorded:
    """What the version was trained from and came out as, per the ledger and its MLflow run."""

    model: str
    version: str
    run_id: str
    config: Config
    dataset_digest: str
    base_digest: str
    adapter_digest: str
    flow_run_id: str
    files: dict[str, str]  # the stored manifest's file -> sha256
    metrics: dict[str, float]  # the run's test_* metrics
    environment: dict[str, Any] | None  # reports/environment.json (None: registered before it was recorded)


def recorded(model: str, version: str) -> Recorded:
    """The version's record; refuses a version the ledger never registered (or registered as another one)."""
    c = registry.client()
    mv = registry.model_version(c, model, version)
    with Ledger() as led:
        own = trust.read(led).events(model=model, version=version)
    if not any(e.action == "registered" for e in own):
        raise Refused(f"{model} v{version} has no counted `registered` event in the ledger, so there is no record to "
                      "reproduce against (`adaptrail audit` says why)")
    other = identity_problem(model, version, own, identity_of(mv))
    if other:
        raise Refused(f"refused: {other}")
    facts = ledger_tags(own)
    missing = [t for t in (Tag.DATASET_DIGEST, Tag.BASE_MODEL_DIGEST, Tag.ADAPTER_DIGEST) if not facts.get(t)]
    if missing:
        raise Refused(f"{model} v{version}'s registration records no {', '.join(missing)}; nothing to compare with")
    return Recorded(
        model=model, version=str(version), run_id=mv.run_id, config=_recorded_config(c, mv.run_id, model, version),
        dataset_digest=facts[Tag.DATASET_DIGEST], base_digest=facts[Tag.BASE_MODEL_DIGEST],
        adapter_digest=facts[Tag.ADAPTER_DIGEST], flow_run_id=facts.get(Tag.FLOW_RUN_ID, ""),
        files=_stored_files(mv.source),
        metrics={k: float(v) for k, v in (registry.run_metrics(c, mv.run_id) or {}).items() if k.startswith("test_")},
        environment=registry.read_run_json(c, mv.run_id, f"{ARTIFACT_REPORTS}/{ENVIRONMENT_FILE}"))


def _recorded_config(c, run_id: str, model: str, version: str) -> Config:
    with tempfile.TemporaryDirectory(prefix="adaptrail-config-") as tmp:
        try:
            path = registry.read(f"{ARTIFACT_CONFIG} of run {run_id}",
                                 lambda: c.download_artifacts(run_id, ARTIFACT_CONFIG, tmp))
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, MlflowException) as err:
            raise InputError(f"{model} v{version}'s run {run_id} has no readable {ARTIFACT_CONFIG} ({err}); without "
                             "the recorded config it cannot be reproduced") from None
    return config_from_dict(raw if isinstance(raw, dict) else {})


def _stored_files(source: str) -> dict[str, str]:
    """The stored manifest's ``{file: sha256}`` (what the registered adapter's files were)."""
    data, _ = fetch_manifest(source)
    try:
        return {str(k): str(v) for k, v in json.loads(data)["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"the stored manifest at {source} is not readable (edited?); `adaptrail verify` says more"
                         ) from None


# --- the inputs must be the recorded ones -----------------------------------------------------------------------


def check_inputs(rec: Recorded) -> dict[str, str]:
    """Refuse unless the data file still has the recorded dataset digest and the base model its recorded digest
    (recomputed the way training computes them); returns what was checked."""
    cfg = rec.config
    splits = load_splits(cfg)
    if splits.digest != rec.dataset_digest:
        raise Refused(f"refused: the data file {cfg.data.path} no longer holds the data {rec.model} v{rec.version} was "
                      f"trained on: its dataset digest is now {splits.digest}, the registration recorded "
                      f"{rec.dataset_digest}. Restore that data (file sha256 now {splits.source_digest}); nothing was "
                      "trained or recorded")
    base = resolve_base_model(cfg.model)
    if base.digest != rec.base_digest and weights_digest(Path(base.path)) != rec.base_digest:
        raise Refused(f"refused: the base model {cfg.model.base} at {base.path} is not the one {rec.model} "
                      f"v{rec.version} was trained on: its digest is now {base.digest}, the registration recorded "
                      f"{rec.base_digest}. Install that base; nothing was trained or recorded")
    return {"data_file": str(cfg.data.path), "dataset_digest": splits.digest, "base_path": base.path,
            "base_digest": base.digest}


def load_splits(cfg: Config):
    if cfg.model.task == "causal_lm":
        from tasks.data.lm import load_lm_splits

        return load_lm_splits(cfg.data)
    from tasks.data.splits import load_dataset_splits

    return load_dataset_splits(cfg.data)


# --- the scratch state ------------------------------------------------------------------------------------------


@contextmanager
def scratch_state(home: Path) -> Iterator[None]:
    """Every adaptrail location under ``home`` for the duration (MLflow store, artifacts, ledger, keys); restored
    after, whatever happens."""
    saved = {k: os.environ.get(k) for k in (*SCRATCH_ENV, events.ENV_EVENTS)}
    try:
        for k in SCRATCH_ENV:
            os.environ.pop(k, None)
        os.environ["ADAPTRAIL_HOME"] = str(home)
        os.environ[events.ENV_EVENTS] = "off"  # the scratch registry's version is not announced as the real one
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """The training run's own log lines (adaptrail's and Prefect's flow and task runs) also go to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.addFilter(_name_run)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s"))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(n) for n in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


def _name_run(record: logging.LogRecord) -> bool:
    """Name the Prefect flow or task run a record comes from (Prefect passes them as ``extra``)."""
    names = [str(getattr(record, k)) for k in ("flow_run_name", "task_run_name") if getattr(record, k, None)]
    record.run = f" [{' / '.join(names)}]" if names else ""
    return True


@contextmanager
def recorded_threads(environment: dict[str, Any] | None, cfg: Config) -> Iterator[int | None]:
    """Train with the torch thread count recorded at registration (when the config leaves it to the machine and
    this machine has enough cores): a different count splits floating-point sums differently."""
    import torch

    want = (environment or {}).get("torch_threads")
    before = torch.get_num_threads()
    use = want if isinstance(want, int) and cfg.training.num_threads is None and 0 < want <= (os.cpu_count() or 1) \
        else None
    if use:
        torch.set_num_threads(use)
    try:
        yield use
    finally:
        torch.set_num_threads(before)


# --- reproducing ------------------------------------------------------------------------------------------------


def reproduce(model: str, version: str, run_training: RunTraining, out: Path | None = None,
              requested_by: str | None = None) -> dict[str, Any]:
    """Check the inputs, train again in a scratch state under ``out``, compare, write ``reproduction.json`` and the
    ``reproduced`` ledger event. Returns the report. On any failure the folder is removed and nothing is recorded."""
    who = requested_by or state.current_user()
    rec = recorded(model, str(version))
    checked = check_inputs(rec)
    trust.require_service_key()  # the result must be signable before any training time is spent
    out = _fresh_folder(out, model, str(version))
    try:
        report = _train_and_compare(rec, checked, run_training, out, who)
        (out / REPORT_FILE).write_text(_json(report), encoding="utf-8")
        event = record_event(model, str(version), report)
        report["ledger_seq"] = event.seq
        (out / REPORT_FILE).write_text(_json(report), encoding="utf-8")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    events.notify(event)  # a Prefect event about the version, after the ledger has it (never raises)
    return report


def _train_and_compare(rec: Recorded, checked: dict[str, str], run_training: RunTraining, out: Path, who: str
                       ) -> dict[str, Any]:
    config = rec.config.model_copy(update={"approval": rec.config.approval.model_copy(update={"in_flow": False})})
    home = out / STATE_DIR
    with scratch_state(home), run_log(out / LOG_FILE), recorded_threads(rec.environment, config) as threads:
        log.info("reproducing %s v%s (run %s) in %s", rec.model, rec.version, rec.run_id, home)
        summary = run_training(config, who)
        env_now = training_environment(config.training.seed)
        c = registry.client()
        mv = registry.model_version(c, summary["model"], str(summary["version"]))
        adapter_dir = registry.local_path_of(mv.source)
        tracking = state.tracking_uri()
    if adapter_dir is None or not adapter_dir.is_dir():
        raise InputError(f"the reproduced adapter is not a local folder ({mv.source})")
    new_files = file_map(adapter_dir)
    new_digest = recompute_digest(adapter_dir)
    new_metrics = {k: float(v) for k, v in summary["metrics"].items() if k.startswith("test_")}
    return {
        "model": rec.model, "version": rec.version, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "requested_by": who, "identical": new_digest == rec.adapter_digest, "checked": checked,
        "recorded": {"run_id": rec.run_id, "flow_run_id": rec.flow_run_id, "adapter_digest": rec.adapter_digest,
                     "metrics": rec.metrics},
        "new": {"run_id": summary["run_id"], "flow_run_id": summary["flow_run_id"], "adapter_digest": new_digest,
                "adapter_dir": str(adapter_dir), "tracking_uri": tracking, "state": str(home),
                "log": str(out / LOG_FILE), "metrics": new_metrics, "train_seconds": summary.get("train_seconds"),
                "torch_threads_set": threads},
        "files": compare_files(rec.files, new_files),
        "metric_differences": metric_differences(rec.metrics, new_metrics),
        "environment": {"recorded": rec.environment, "now": env_now,
                        "differences": differences(rec.environment, env_now)},
        "out": str(out),
    }


def compare_files(recorded_files: dict[str, str], new_files: dict[str, str]) -> dict[str, list[str]]:
    """Per adapter file: the same bytes, different bytes, only in the registered adapter, only in the new one."""
    names = sorted(set(recorded_files) | set(new_files))
    return {"identical": [n for n in names if recorded_files.get(n) == new_files.get(n)],
            "differ": [n for n in names if n in recorded_files and n in new_files
                       and recorded_files[n] != new_files[n]],
            "missing": [n for n in names if n not in new_files], "added": [n for n in names if n not in recorded_files]}


def metric_differences(recorded_metrics: dict[str, float], new_metrics: dict[str, float]) -> dict[str, float]:
    """new - recorded, for each test metric both have (rounded; non-finite values left out)."""
    out = {}
    for k in sorted(set(recorded_metrics) & set(new_metrics)):
        d = new_metrics[k] - recorded_metrics[k]
        if math.isfinite(d):
            out[k] = round(d, 6)
    return out


def _fresh_folder(out: Path | None, model: str, version: str) -> Path:
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = state.home() / "reproductions" / f"{model}-v{version}-{stamp}"
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty; pass --out with a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {out} ({err}); pass --out DIR you can write") from None
    return out


def _json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"


# --- the ledger event and what the audit shows ------------------------------------------------------------------


def record_event(model: str, version: str, report: dict[str, Any]) -> LedgerEvent:
    """The ``reproduced`` event: signed by the pipeline's service key (its policy person is the actor), the invoking
    identity and the outcome in ``extra``; it sets no approval state."""
    extra = {"identical": bool(report["identical"]), "requested_by": report["requested_by"],
             "adapter_digest": report["new"]["adapter_digest"],
             "recorded_adapter_digest": report["recorded"]["adapter_digest"],
             "run_id": report["new"]["run_id"], "flow_run_id": str(report["new"]["flow_run_id"]),
             "files_differ": report["files"]["differ"] + report["files"]["missing"] + report["files"]["added"],
             "metric_differences": report["metric_differences"],
             "environment_differences": report["environment"]["differences"][:20], "out": report["out"]}
    reason = ("re-trained from the recorded config, data and base: byte-identical adapter" if extra["identical"] else
              f"re-trained from the recorded config, data and base: adapter differs "
              f"({len(extra['files_differ'])} file(s)); see {report['out']}")
    for attempt in range(3):
        try:
            return _append(model, version, reason, json_sha256({k: v for k, v in report.items() if k != "ledger_seq"}),
                           extra)
        except LedgerTimeConflict:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _append(model: str, version: str, reason: str, evidence: str, extra: dict[str, Any]) -> LedgerEvent:
    signer = trust.service_signer()
    now = decision_time()
    with Ledger() as led:
        t = trust.read(led)
        actor = trust.person_of(t.policy, signer) if t.policy else extra["requested_by"]
        d = trust.draft(t, model, version, "reproduced", actor, reason, evidence, extra, now)
        if t.policy is None:  # before `adaptrail init`: recorded unsigned, as registrations are
            f = d.fields
            return led.append(model, version, "reproduced", actor, reason, f["evidence_digest"], f["extra"], f["at"],
                              expect_last=d.expect_last)
        return trust.commit(led, d, signer.sign(d.statement), t.policy)


def last_reproduction(own: list[LedgerEvent]) -> dict[str, Any] | None:
    """The version's latest counted ``reproduced`` event, as the audit shows it (None: never reproduced)."""
    e = next((x for x in reversed(own) if x.action == "reproduced"), None)
    if e is None:
        return None
    return {"seq": e.seq, "at": e.at, "identical": bool(e.extra.get("identical")), "by": e.actor,
            "requested_by": str(e.extra.get("requested_by", "")), "run_id": str(e.extra.get("run_id", "")),
            "files_differ": list(e.extra.get("files_differ") or []),
            "metric_differences": dict(e.extra.get("metric_differences") or {}),
            "environment_differences": list(e.extra.get("environment_differences") or []),
            "out": str(e.extra.get("out", ""))}


def reproduction_findings(model: str, version: str, last: dict[str, Any] | None
                          ) -> list[tuple[str, str, str, str, str]]:
    """The audit's finding (severity, code, model, version, message) when the last reproduction was not
    byte-identical: low when the recorded environment differed (the likely why), medium when nothing explains it."""
    if last is None or last["identical"]:
        return []
    env = last["environment_differences"]
    why = (f"the environment differed ({'; '.join(env[:3])}{'; ...' if len(env) > 3 else ''})" if env else
           "with no recorded environment difference to explain it (non-deterministic training?)")
    metrics = ", ".join(f"{k} {d:+.4f}" for k, d in last["metric_differences"].items()) or "no metrics compared"
    return [("low" if env else "medium", "reproduction-differs", model, version,
             f"re-training at {last['at']} (ledger seq {last['seq']}, asked by {last['requested_by']}) did not give a "
             f"byte-identical adapter ({', '.join(last['files_differ']) or 'digest differs'}); {why}; test metrics "
             f"vs registered: {metrics}; details in {last['out']}")]
