#!/bin/bash
# The whole test run (what `make test` and .ci/run do):
#   1. install test deps, fetch the real kubectl/helm into the cache
#   2. start the local registry, build+push busybox:latest
#   3. cargo build --locked --all-targets
#   4. cargo test --locked [ARGS...] -- --test-threads=2, with
#        KUBE_TEST_KUBECTL, KUBE_TEST_HELM, KUBE_TEST_REGISTRY, KUBE_BIN, KUBE_TEST_CACHE
#   5. stop the registry again, also when something failed (unless it was already
#      running before this script started: then it is left as found)
# Extra arguments go to `cargo test` before `--` (e.g. a test name filter, `--test e2e`).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
export KUBE_TEST_CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
export KUBE_TEST_REGISTRY_PORT=${KUBE_TEST_REGISTRY_PORT:-5000}
CACHE=$KUBE_TEST_CACHE

die() { echo "test: ERROR: $*" >&2; exit 1; }
step() { echo "==> $*"; }

command -v cargo >/dev/null || die "cargo not found in PATH"

step "test dependencies"
scripts/install-test-deps.sh
scripts/fetch-clients.sh
KUBE_TEST_PYTHON=$(scripts/fetch-python-client.sh)

step "local registry on 127.0.0.1:$KUBE_TEST_REGISTRY_PORT"
registry_was_running=0
if scripts/test-registry.sh status >/dev/null 2>&1; then
    registry_was_running=1
fi
stop_registry() {
    local rc=$?
    if [ "$registry_was_running" = 0 ]; then
        scripts/test-registry.sh stop || true
    fi
    exit "$rc"
}
trap stop_registry EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
scripts/test-registry.sh start

step "test images"
scripts/build-test-images.sh

step "cargo build --locked --all-targets"
cargo build --locked --all-targets

step "cargo test --locked $* -- --test-threads=2"
KUBE_TEST_KUBECTL=$CACHE/bin/kubectl \
KUBE_TEST_HELM=$CACHE/bin/helm \
KUBE_TEST_PYTHON=$KUBE_TEST_PYTHON \
KUBE_TEST_REQUIRE_ROOT=1 \
KUBE_TEST_REGISTRY=127.0.0.1:$KUBE_TEST_REGISTRY_PORT \
KUBE_BIN=$REPO/target/debug/kube \
    cargo test --locked "$@" -- --test-threads=2
