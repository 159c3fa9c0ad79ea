"""The deployment files (infra/, Dockerfile) hold together offline: they parse, name the promised services and health
checks, keep secrets out, reference only variables .env.example defines; schema tools run when installed."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("infra_checks", ROOT / "infra" / "checks.py")
checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checks)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(checks.COMPOSE.read_text(encoding="utf-8"))


def _compose_problems(compose: dict) -> list[str]:
    return checks.compose_problems(compose, checks.env_example(), yaml.safe_dump(compose))


def test_every_deployment_file_parses_and_passes_the_project_checks():
    parsed = checks.parse_all()
    assert {"docker-compose.yml", "base-job-template.json", "mlflow.yaml", "prefect-worker-values.yaml"} <= \
        {p.name for p in parsed}
    assert checks.all_problems() == []


def test_compose_runs_the_team_stack_with_health_checks_and_named_volumes(compose):
    services = compose["services"]
    assert set(checks.REQUIRED_SERVICES) <= set(services)
    assert all("healthcheck" in s for n, s in services.items() if n not in checks.ONE_SHOT)
    assert {"postgres-data", "minio-data"} <= set(compose["volumes"])
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "postgresql+psycopg2://" in mlflow_cmd and "--artifacts-destination s3://" in mlflow_cmd
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["prefect-worker"]["environment"]["ADAPTRAIL_LEDGER_URL"].startswith("postgresql://")


@pytest.mark.parametrize(("edit", "words"), [
    (lambda c: c["services"]["postgres"]["environment"].update(POSTGRES_PASSWORD="hunter2"), "literal secret"),
    (lambda c: c["services"]["mlflow"]["command"].__setitem__(3, "postgresql+psycopg2://u:hunter2@db/m"),
     "literal password"),
    (lambda c: c["services"]["mlflow"].pop("healthcheck"), "mlflow has no healthcheck"),
    (lambda c: c["services"]["prefect-worker"]["environment"].update(X="${NOT_IN_ENV_EXAMPLE}"), "NOT_IN_ENV"),
    (lambda c: c["services"]["minio"].update(volumes=["undeclared:/data"]), "not declared"),
    (lambda c: c["services"].pop("minio-init"), "minio-init missing"),
])
def test_compose_checks_catch_what_would_break_a_deployment(compose, edit, words):
    broken = copy.deepcopy(compose)
    edit(broken)
    assert any(words in p for p in _compose_problems(broken)), _compose_problems(broken)


def test_dockerfile_builds_the_project_image_as_a_non_root_user():
    text = checks.DOCKERFILE.read_text(encoding="utf-8")
    assert checks.dockerfile_problems(text) == []
    assert checks.dockerfile_problems(text.replace("USER adaptrail", "USER root")) == ["Dockerfile lacks a non-root USER"]
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".adaptrail", "infra/.env", ".git"} <= set(ignored)


def test_the_k8s_job_template_passes_prefect_validation_and_requests_a_gpu():
    template = json.loads(checks.JOB_TEMPLATE.read_text(encoding="utf-8"))
    assert checks.job_template_problems(template) == []
    job = checks.render_job(template, {"gpus": 2, "image": "adaptrail:test"})
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2 and container["image"] == "adaptrail:test"
    del template["variables"]["properties"]["gpus"]
    assert any("undeclared variable" in p for p in checks.job_template_problems(template))


def test_docker_compose_config_accepts_the_file():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose); infra/validate.sh runs it")
    done = subprocess.run([tool, "-p", "adaptrail", "--env-file", str(checks.ENV_EXAMPLE), "-f", str(checks.COMPOSE),
                           "config", "-q"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_kubernetes_manifests_match_the_api_schemas(tmp_path):
    beside = Path(sys.executable).with_name("kubernetes-validate")  # installed in the venv by the dev extra
    tool = os.environ.get("KUBERNETES_VALIDATE") or (str(beside) if beside.exists() else None) \
        or shutil.which("kubernetes-validate")
    if not tool:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate); infra/validate.sh runs it")
    job = tmp_path / "job.yaml"
    subprocess.run([sys.executable, str(checks.INFRA / "checks.py"), "--render-job", str(job)], check=True,
                   capture_output=True)
    manifests = [p for p in (checks.INFRA / "k8s").glob("*.yaml") if "apiVersion:" in p.read_text(encoding="utf-8")]
    done = subprocess.run([tool, "--strict", "--quiet", *map(str, manifests), str(job)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
