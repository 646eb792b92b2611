#!/usr/bin/env bash
# Build Jaeger v2 (the all-in-one `jaeger` binary) from its Go module, for the collector tests.
#
#   VERSION=v1.76.0 scripts/build-jaeger.sh        -> ~/.cache/opsllm/jaeger-v1.76.0/jaeger
#
# Idempotent: a cached binary that answers `jaeger version` is kept. The cache lives outside the repo
# (OPSLLM_CACHE, default ~/.cache/opsllm) so that it survives clean checkouts.
#
# Why a wrapper module: jaeger's own go.mod has a replace directive, and `go install pkg@version` refuses
# modules with one. So the build runs in a throwaway module whose go.mod is jaeger's (module line renamed,
# toolchain line dropped, replace kept) plus a require of jaeger itself: same dependency versions as
# upstream's own build, replace included.
set -euo pipefail

VERSION="${VERSION:-v1.76.0}"
MODULE=github.com/jaegertracing/jaeger
CACHE="${OPSLLM_CACHE:-${HOME}/.cache/opsllm}"
DEST="${CACHE}/jaeger-${VERSION}"
BIN="${DEST}/jaeger"

die() { printf 'build-jaeger.sh: %s\n' "$*" >&2; exit 1; }
works() { [[ -x "$1" ]] && { "$1" version >/dev/null 2>&1 || "$1" --version >/dev/null 2>&1; }; }

if works "${BIN}"; then
    echo "jaeger ${VERSION} already built: ${BIN}"
    exit 0
fi

command -v go >/dev/null \
    || die "the Go toolchain is needed to build Jaeger ${VERSION} from its module (install golang, e.g. apt-get install golang-go, or Go from go.dev)"

mkdir -p "${DEST}"
# Two builds of the same output at once (make -j, two checkouts) would race on the rename below and
# double an already long build: the second waits for the first and then finds its binary.
exec 9>"${DEST}.lock"
if command -v flock >/dev/null; then
    flock -w 3600 9 || die "another build of ${BIN} has held ${DEST}.lock for an hour; if none is running, delete the lock"
    if works "${BIN}"; then
        echo "jaeger ${VERSION} built by a concurrent run: ${BIN}"
        exit 0
    fi
fi

# A go.mod that names a newer toolchain must not make go fetch one behind our back: fail instead.
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod"

info="$(cd / && go mod download -json "${MODULE}@${VERSION}")" \
    || die "could not download ${MODULE}@${VERSION} from the Go module proxy ($(go env GOPROXY)): ${info:-see above}; check VERSION and the network"
field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" <<<"${info}" | head -n1; }
gomod="$(field GoMod)"
srcdir="$(field Dir)"
[[ -f "${gomod}" ]] || die "go mod download gave no go.mod for ${MODULE}@${VERSION} (output: ${info})"

need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "${gomod}")"
have="$(go env GOVERSION | sed 's/^go//')"
if [[ -n "${need}" ]] && [[ "$(printf '%s\n%s\n' "${need}" "${have}" | sort -V | head -n1)" != "${need}" ]]; then
    die "Jaeger ${VERSION} needs Go >= ${need}; this go is ${have}"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/jaeger-build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

sed -e 's|^module .*|module opsllm.dev/jaeger-build|' -e '/^toolchain /d' "${gomod}" > "${work}/go.mod"
printf '\nrequire %s %s\n' "${MODULE}" "${VERSION}" >> "${work}/go.mod"
# Upstream's go.sum pins the same dependency set; -mod=mod adds the lines for jaeger itself (checked
# against the checksum database like any other download).
if [[ -n "${srcdir}" && -f "${srcdir}/go.sum" ]]; then
    cp "${srcdir}/go.sum" "${work}/go.sum"
fi

date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for kv in "latestVersion=${VERSION}" "commitSHA=module-${VERSION}" "date=${date}"; do
    ldflags+=" -X ${MODULE}/internal/version.${kv}"
done

echo "building ${MODULE}/cmd/jaeger@${VERSION} in ${work} (a cold build takes minutes)"
start=$(date +%s)
(cd "${work}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${work}/jaeger" "${MODULE}/cmd/jaeger") \
    || die "go build of ${MODULE}/cmd/jaeger@${VERSION} failed (see above)"
works "${work}/jaeger" || die "the built binary does not answer 'jaeger version'; not installing it"
# Rename within one filesystem so that a reader never sees a half-written binary.
cp "${work}/jaeger" "${BIN}.tmp.$$"
mv -f "${BIN}.tmp.$$" "${BIN}"
echo "built ${BIN} in $(( $(date +%s) - start ))s: $("${BIN}" version 2>/dev/null | head -n1)"
