# The OpsLLM operator image: `opsllm operator run` (Kopf) with the operator extra, run as a non-root user.
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/opsllm/opsllm-operator:0.1.0 .
#
# The Helm chart (helm/opsllm) runs it with a read-only root filesystem: nothing here writes outside /tmp and
# the data volume at run time.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY opsllm ./opsllm
RUN pip install ".[operator]" && rm -rf /src

# A fixed numeric id, so that runAsNonRoot can verify it and fsGroup matches (the chart uses 10001).
RUN groupadd --system --gid 10001 opsllm \
    && useradd --system --uid 10001 --gid opsllm --home-dir /tmp --shell /usr/sbin/nologin opsllm
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080 8081
ENTRYPOINT ["opsllm", "operator", "run"]
