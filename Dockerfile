# The adaptrail image: the project and its CLI, for the Prefect worker, the MLflow server and Kubernetes jobs.
#   docker build -t adaptrail:0.1.0 .                                    # torch CPU (default)
#   docker build -t adaptrail:0.1.0-cu128 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ADAPTRAIL_HOME=/data/adaptrail

RUN apt-get update \
    && apt-get install -y --no-install-recommends git procps \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, from the CPU (or the chosen CUDA) index, so `pip install .` keeps it instead of pulling a CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY flows ./flows
COPY tasks ./tasks
COPY validation ./validation
COPY configs ./configs
COPY examples ./examples
COPY prefect.yaml ./
RUN pip install ".[postgres]"

RUN useradd --create-home --uid 10001 adaptrail \
    && mkdir -p /data/adaptrail \
    && chown -R adaptrail:adaptrail /data/adaptrail /app
USER adaptrail

CMD ["adaptrail", "--help"]
