"""Offline checks of the deployment files (run by infra/validate.sh and tests/test_infra.py): they parse, name the
services and health checks the README promises, hold no literal secrets, and reference only variables that
infra/.env.example defines. ``python infra/checks.py [--render-job OUT.yaml]`` prints problems; exit 1 if any."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
JOB_TEMPLATE = INFRA / "k8s" / "base-job-template.json"
DOCKERFILE = ROOT / "Dockerfile"

REQUIRED_SERVICES = ("postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker")
ONE_SHOT = ("minio-init",)  # jobs that exit: no health check
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.I)
PLACEHOLDER = "CHANGE_ME"
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")


def parse_all(folder: Path = INFRA) -> dict[Path, Any]:
    """Every YAML (all documents) and JSON file under ``folder``, parsed; a parse error raises with the file."""
    parsed: dict[Path, Any] = {}
    for path in sorted(folder.rglob("*")):
        try:
            if path.suffix in (".yml", ".yaml"):
                parsed[path] = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            elif path.suffix == ".json":
                parsed[path] = json.loads(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, json.JSONDecodeError) as err:
            raise ValueError(f"{path.relative_to(ROOT)} does not parse: {err}") from err
    return parsed


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of .env.example."""
    pairs = (line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def secret_problems(where: str, values: dict[str, Any]) -> list[str]:
    """A secret-named key with a literal value, or a URL with a literal password, is a leaked secret."""
    problems = []
    for key, value in values.items():
        text = str(value)
        literal = not VAR_REF.search(text) and not text.startswith("$")
        if SECRET_KEY.search(key) and literal and text not in ("", PLACEHOLDER):
            problems.append(f"{where}: {key} holds a literal secret; reference ${{{key}}} from infra/.env")
        for pw in URL_PASSWORD.findall(text):
            if not VAR_REF.fullmatch(pw) and pw != PLACEHOLDER:
                problems.append(f"{where}: {key} has a literal password in a URL; use a ${{...}} reference")
    return problems


def compose_problems(compose: dict, env: dict[str, str], raw: str) -> list[str]:
    """What the team deployment needs from docker-compose.yml."""
    services = compose.get("services", {})
    problems = [f"service {s} missing" for s in REQUIRED_SERVICES if s not in services]
    for name, svc in services.items():
        if name not in ONE_SHOT and "healthcheck" not in svc:
            problems.append(f"service {name} has no healthcheck")
        environment = svc.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        problems += secret_problems(f"service {name} environment", environment)
        command = svc.get("command", [])
        problems += secret_problems(f"service {name} command", {"command": " ".join(command)
                                                                if isinstance(command, list) else command})
        for vol in svc.get("volumes", []):
            source = str(vol).split(":", 1)[0]
            if not source.startswith((".", "/")) and source not in (compose.get("volumes") or {}):
                problems.append(f"service {name} uses volume {source!r} that is not declared under volumes:")
    missing = sorted(set(VAR_REF.findall(raw)) - set(env))
    if missing:
        problems.append(f"variables referenced but not in infra/.env.example: {', '.join(missing)}")
    mlflow_cmd = " ".join(map(str, services.get("mlflow", {}).get("command", [])))
    if "--backend-store-uri postgresql+psycopg2://" not in mlflow_cmd:
        problems.append("mlflow must use --backend-store-uri postgresql+psycopg2://...")
    if "--artifacts-destination s3://" not in mlflow_cmd:
        problems.append("mlflow must proxy artifacts: --artifacts-destination s3://...")
    if "--pool adaptrail-pool" not in str(services.get("prefect-worker", {}).get("command", "")):
        problems.append("prefect-worker must start a worker for --pool adaptrail-pool")
    for key, value in env.items():
        if SECRET_KEY.search(key) and value != PLACEHOLDER:
            problems.append(f"infra/.env.example: {key} must be {PLACEHOLDER}, not a real value")
    return problems


def dockerfile_problems(text: str) -> list[str]:
    """The project image: python:3.11-slim, torch CPU by default with a CUDA build arg, the project with its
    postgres extra, a non-root user."""
    checks = {
        "FROM python:3.11-slim": r"^FROM python:3\.11-slim\b",
        "a torch index build arg defaulting to CPU": r"^ARG TORCH_INDEX_URL=\S*/cpu\b",
        "pip install .[postgres]": r"pip install \"?\.\[postgres\]",
        "a non-root USER": r"^USER (?!root\b|0\b)\S+",
    }
    return [f"Dockerfile lacks {what}" for what, rx in checks.items() if not re.search(rx, text, re.M)]


def job_template_problems(template: dict) -> list[str]:
    """Prefect's own work-pool validation plus what adaptrail's GPU jobs need."""
    from prefect.server.schemas.actions import validate_base_job_template

    problems = []
    try:
        validate_base_job_template(template)
    except ValueError as err:
        problems.append(f"base job template: {err}")
    container = render_job(template)["spec"]["template"]["spec"]["containers"][0]
    if not container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu"):
        problems.append("base job template requests no nvidia.com/gpu")
    if not any("secretRef" in e for e in container.get("envFrom", [])):
        problems.append("base job template takes no env from a secret")
    if "adaptrail" not in str(container.get("image")):
        problems.append("base job template does not default to the adaptrail image")
    return problems


def render_job(template: dict, values: dict[str, Any] | None = None) -> dict:
    """The Kubernetes Job a worker would submit: placeholders filled from the variables' defaults (+ ``values``)."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    filled = {"name": "adaptrail-flow-run", "command": ["prefect", "flow-run", "execute"], "env": [],
              "labels": {"app": "adaptrail"}, **defaults, **(values or {})}
    return apply_values(template["job_configuration"]["job_manifest"], filled)


def all_problems() -> list[str]:
    parse_all()
    compose_raw = COMPOSE.read_text(encoding="utf-8")
    problems = compose_problems(yaml.safe_load(compose_raw), env_example(), compose_raw)
    problems += dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8"))
    problems += job_template_problems(json.loads(JOB_TEMPLATE.read_text(encoding="utf-8")))
    for path in (INFRA / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                problems += secret_problems(str(path.relative_to(ROOT)), doc.get("stringData", {}))
    return problems


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render-job":
        job = render_job(json.loads(JOB_TEMPLATE.read_text(encoding="utf-8")))
        job["metadata"]["name"] = "adaptrail-flow-run"  # the worker names it from generateName; schemas want one
        Path(sys.argv[2]).write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    found = all_problems()
    print("\n".join(found) if found else "infra checks: ok")
    sys.exit(1 if found else 0)
