#!/usr/bin/env bash
# Validate the deployment files offline: parse + project checks (infra/checks.py, incl. Prefect's base-job-template
# validation), `docker-compose config`, and Kubernetes schemas (kubernetes-validate). A missing tool is reported
# and skipped; a failed check exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== project checks (YAML/JSON parse, services, healthchecks, secrets, .env.example, Dockerfile, job template)"
"$PY" infra/checks.py --render-job "$tmp/job.yaml"

echo "== docker compose config"
if command -v docker-compose >/dev/null; then
  docker-compose -p adaptrail --env-file infra/.env.example -f infra/docker-compose.yml config -q && echo "compose: ok"
elif docker compose version >/dev/null 2>&1; then
  docker compose -p adaptrail --env-file infra/.env.example -f infra/docker-compose.yml config -q && echo "compose: ok"
else
  echo "SKIPPED: neither docker-compose nor the docker compose plugin is installed (apt-get install docker-compose)"
fi

echo "== Kubernetes schemas"
KV=${KUBERNETES_VALIDATE:-$( [ -x .venv/bin/kubernetes-validate ] && echo .venv/bin/kubernetes-validate || command -v kubernetes-validate || true)}
if [ -n "$KV" ]; then
  manifests=$(grep -l '^apiVersion:' infra/k8s/*.yaml)
  "$KV" --strict --quiet $manifests "$tmp/job.yaml" && echo "kubernetes schemas: ok"
else
  echo "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
fi
