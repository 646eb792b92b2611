# The OpsLLM training image: the stages a TrainingRun launches as Jobs (sft, dprm, grpo, eval) on GPU nodes.
#
#   docker build -f docker/training.Dockerfile -t ghcr.io/opsllm/opsllm-training:0.1.0 .
#
# CUDA 12 with cuDNN from NVIDIA's runtime image; Python 3.11 from Ubuntu 22.04's own packages. vLLM goes into
# the same environment as TRL: GRPO runs it colocated, in-process (opsllm.training.grpo).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/opsllm \
    PATH=/opt/opsllm/bin:$PATH \
    HF_HOME=/data/.cache/huggingface

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential git \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/opsllm

WORKDIR /src
COPY pyproject.toml README.md ./
COPY opsllm ./opsllm
# One resolver run for all three, so torch satisfies trl, deepspeed and vllm together.
RUN pip install --upgrade pip \
    && pip install ".[train,deepspeed]" "vllm==0.33.0" \
    && rm -rf /src

RUN groupadd --system --gid 10001 opsllm \
    && useradd --system --uid 10001 --gid opsllm --home-dir /data --shell /usr/sbin/nologin opsllm
USER 10001:10001
# TrainingRun Jobs mount their PVC at /data (TrainingRunSpec.mountPath) and work there.
WORKDIR /data

ENTRYPOINT ["opsllm"]
CMD ["--help"]
