#!/usr/bin/env bash
# Builds the real Kubernetes control plane that `tether-sandbox up --control-plane upstream`
# runs, from the Go modules pinned in sandbox/upstream/*/go.mod and go.sum:
#
#   target/upstream/bin/tether-upstream   kube-apiserver, kube-controller-manager,
#                                         kube-scheduler and an embedded etcd, one binary
#   target/upstream/bin/coredns           CoreDNS with kubeadm's plugins
#
# Idempotent: Go's build cache makes a run with nothing changed take seconds, and a binary
# whose build ID already matches is not relinked. Exit codes: 0 built, 3 Go is missing (the
# caller reports the upstream runs as skipped), 4 the modules cannot be fetched (skipped
# too), anything else a failed build.
#
# Builds run at the lowest CPU priority, one package at a time by default (the machines this
# is built on have two shared cores); TETHER_UPSTREAM_GO_JOBS raises that.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
out="${TETHER_UPSTREAM_BIN:-$repo/target/upstream/bin}"
jobs="${TETHER_UPSTREAM_GO_JOBS:-1}"

if ! command -v go >/dev/null; then
    echo "build-upstream: Go is not installed (needs Go 1.24 or newer and the Go module proxy)" >&2
    exit 3
fi
mkdir -p "$out"

# Fetching apart from building: a machine that cannot reach the module proxy (exit 4) is told
# from a build that fails. Quick when the module cache has them.
for dir in sandbox/upstream/controlplane sandbox/upstream/coredns; do
    if ! (cd "$dir" && go mod download); then
        echo "build-upstream: cannot fetch the Go modules of $dir (GOPROXY=$(go env GOPROXY))" >&2
        exit 4
    fi
done

# The version the binaries report (kubectl version, the Node's kubeletVersion skew checks,
# /version), read from the pinned go.mod rather than repeated here.
k8s_version="$(cd sandbox/upstream/controlplane && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="$(echo "$k8s_version" | cut -d. -f2)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # <module dir> <output name> [ldflags]
    local dir="$1" name="$2" flags="${3:--s -w}"
    local started=$SECONDS
    (cd "$dir" && nice -n 19 go build -p "$jobs" -trimpath -ldflags "$flags" -o "$out/$name" .)
    echo "build-upstream: $name ($(du -h "$out/$name" | cut -f1)) in $((SECONDS - started))s"
}

build sandbox/upstream/controlplane tether-upstream "$ldflags"
build sandbox/upstream/coredns coredns
echo "build-upstream: Kubernetes $k8s_version in $out"
