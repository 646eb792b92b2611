#!/usr/bin/env bash
# Build a loopback Kubernetes control plane from Go modules, for the operator tests:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                              (go.etcd.io/etcd/server/v3, the version k8s pins)
#   kwok                                              (sigs.k8s.io/kwok/cmd/kwok; Pods reach Running without kubelets)
#
#   scripts/build-kube.sh                      -> ~/.cache/opsllm/kube-v1.37.2/{kube-apiserver,...}
#   VERSION=v1.36.3 KWOK_VERSION=v0.8.0 scripts/build-kube.sh
#   COMPONENTS="kube-apiserver kubectl" scripts/build-kube.sh
#
# Idempotent: a cached binary that answers --version is kept. The cache lives outside the repo
# (OPSLLM_CACHE, default ~/.cache/opsllm), keyed by version, so that it survives clean checkouts.
# The last lines printed are NAME=PATH, one per binary.
#
# Why a wrapper module: k8s.io/kubernetes's go.mod points its staging modules (k8s.io/api, apimachinery,
# client-go, apiserver, ...) at ./staging with version v0.0.0, which neither `go install pkg@version` nor
# a plain require can resolve. The wrapper module copies kubernetes's go.mod (same dependency versions as
# upstream's own build), renames the module, requires k8s.io/kubernetes itself and turns each
# `k8s.io/X => ./staging/src/k8s.io/X` into `k8s.io/X => k8s.io/X v0.MINOR.PATCH` (the published tag).
set -euo pipefail

VERSION="${VERSION:-v1.37.2}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
COMPONENTS="${COMPONENTS:-kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok}"
CACHE="${OPSLLM_CACHE:-${HOME}/.cache/opsllm}"
DEST="${CACHE}/kube-${VERSION}"

die() { printf 'build-kube.sh: %s\n' "$*" >&2; exit 1; }
works() { [[ -x "$1" ]] && { "$1" --version >/dev/null 2>&1 || "$1" version --client >/dev/null 2>&1; }; }

[[ "${VERSION}" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "VERSION must look like v1.37.2, got '${VERSION}'"
STAGING="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"   # k8s v1.37.2 <-> k8s.io/api v0.37.2

missing=()
for c in ${COMPONENTS}; do works "${DEST}/${c}" || missing+=("${c}"); done

print_paths() {
    for c in ${COMPONENTS}; do
        if works "${DEST}/${c}"; then echo "${c}=${DEST}/${c}"; else echo "${c}=MISSING" >&2; fi
    done
}

if ((${#missing[@]} == 0)); then
    echo "kubernetes ${VERSION} already built in ${DEST}" >&2
    print_paths
    exit 0
fi

command -v go >/dev/null \
    || die "the Go toolchain is needed to build Kubernetes ${VERSION} from its modules (install Go >= the 'go' line of k8s.io/kubernetes@${VERSION}'s go.mod)"

mkdir -p "${DEST}"
# Two builds at once (make -j, two checkouts) would double a long build: the second waits for the first.
exec 9>"${DEST}.lock"
if command -v flock >/dev/null; then
    flock -w 3600 9 || die "another build has held ${DEST}.lock for an hour; if none is running, delete the lock"
    missing=()
    for c in ${COMPONENTS}; do works "${DEST}/${c}" || missing+=("${c}"); done
    if ((${#missing[@]} == 0)); then print_paths; exit 0; fi
fi

# A go.mod that names a newer toolchain must not make go fetch one behind our back: fail instead.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod"

work="$(mktemp -d "${TMPDIR:-/tmp}/kube-build.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

have="$(go env GOVERSION | sed 's/^go//')"
check_go() { # $1 = go.mod path, $2 = what
    local need
    need="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$1")"
    if [[ -n "${need}" ]] && [[ "$(printf '%s\n%s\n' "${need}" "${have}" | sort -V | head -n1)" != "${need}" ]]; then
        die "$2 needs Go >= ${need}; this go is ${have}"
    fi
}

build() { # $1 = output name, $2 = package, $3 = module dir, $4.. = extra ldflags
    local out="$1" pkg="$2" dir="$3"; shift 3
    local t0=${SECONDS}
    echo "building ${out} (${pkg}) ..." >&2
    (cd "${dir}" && go build -trimpath -ldflags="-s -w $*" -o "${DEST}/.${out}.tmp" "${pkg}") \
        || die "go build ${pkg} failed (see above)"
    mv -f "${DEST}/.${out}.tmp" "${DEST}/${out}"
    echo "built ${out} in $((SECONDS - t0))s: $(du -h "${DEST}/${out}" | cut -f1)" >&2
}

want() { local c; for c in "${missing[@]}"; do [[ "${c}" == "$1" ]] && return 0; done; return 1; }

# ---- k8s.io/kubernetes (+ etcd at the version kubernetes pins) -----------------------------------------
if want kube-apiserver || want kube-controller-manager || want kube-scheduler || want kubectl || want etcd; then
    info="$(cd / && go mod download -json "k8s.io/kubernetes@${VERSION}")" \
        || die "could not download k8s.io/kubernetes@${VERSION} from the Go module proxy ($(go env GOPROXY)): ${info:-see above}"
    gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"${info}" | head -n1)"
    [[ -f "${gomod}" ]] || die "go mod download gave no go.mod for k8s.io/kubernetes@${VERSION} (output: ${info})"
    check_go "${gomod}" "k8s.io/kubernetes ${VERSION}"

    k="${work}/k8s"
    mkdir -p "${k}"
    # module renamed; toolchain line dropped; ./staging replaces -> published staging tags; require kubernetes.
    sed -e 's|^module k8s.io/kubernetes$|module opsllm.local/kubebuild|' \
        -e '/^toolchain /d' \
        -e "s|^\([[:space:]]*\)\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$|\1\2 => \2 ${STAGING}|" \
        "${gomod}" >"${k}/go.mod"
    grep -q '=> ./staging' "${k}/go.mod" && die "a staging replace was not rewritten: $(grep '=> ./staging' "${k}/go.mod")"
    # Staging modules that kubernetes itself does not require (sample-cli-plugin, sample-controller) are
    # not published for every release: a replace of an unneeded module is harmless, but drop them anyway.
    sed -i -E '/k8s.io\/(sample-cli-plugin|sample-controller) =>/d' "${k}/go.mod"
    printf '\nrequire k8s.io/kubernetes %s\n' "${VERSION}" >>"${k}/go.mod"
    # go build -mod=mod fills go.sum as it resolves; cp the upstream go.sum first for fewer look-ups.
    sum="${gomod%.mod}.sum"; [[ -f "${sum}" ]] && cp "${sum}" "${k}/go.sum" || true

    minor="${VERSION#v1.}"; minor="${minor%%.*}"
    vpkg=k8s.io/component-base/version
    kflags="-X ${vpkg}.gitVersion=${VERSION} -X ${vpkg}.gitMajor=1 -X ${vpkg}.gitMinor=${minor} -X ${vpkg}.gitTreeState=clean -X ${vpkg}.buildDate=1970-01-01T00:00:00Z"
    # client-go has its own copy of the version variables (used by kubectl version's client side).
    kflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${VERSION} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        want "${c}" && build "${c}" "k8s.io/kubernetes/cmd/${c}" "${k}" "${kflags}"
    done
    if want etcd; then
        # go.etcd.io/etcd/server/v3's module root is package main (the etcd server); its version is the one
        # k8s.io/kubernetes requires, so the client and server match.
        build etcd go.etcd.io/etcd/server/v3 "${k}"
    fi
fi

# ---- kwok: its own module (its go.mod requires a different k8s.io/api than kubernetes's) ---------------
if want kwok; then
    w="${work}/kwok"
    mkdir -p "${w}"
    (cd "${w}" && go mod init opsllm.local/kwokbuild >/dev/null 2>&1 \
        && go mod edit -require="sigs.k8s.io/kwok@${KWOK_VERSION}") || die "could not set up the kwok module"
    # kwok's own go.mod governs dependency versions (it has no replace directives).
    info="$(cd / && go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}")" \
        || die "could not download sigs.k8s.io/kwok@${KWOK_VERSION}: ${info:-see above}"
    kmod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"${info}" | head -n1)"
    check_go "${kmod}" "kwok ${KWOK_VERSION}"
    build kwok sigs.k8s.io/kwok/cmd/kwok "${w}" \
        "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
fi

print_paths
