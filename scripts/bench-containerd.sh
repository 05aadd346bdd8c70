#!/bin/bash
# The reference for pod startup (issue 5): how long Debian's containerd + runc
# take to start the test busybox image with `ctr run -d` until its process runs,
# ROUNDS times (default 20). Installs containerd and runc if missing, runs its
# own containerd (root, state, socket under a temp folder) in a network
# namespace it creates, and stops it by PID. Compare with
# `cargo bench --bench pod_start` (which also goes through the API, scheduler and
# pod network). Needs root and the test registry (make registry images).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-20}
PORT=${KUBE_TEST_REGISTRY_PORT:-5000}
IMAGE=127.0.0.1:$PORT/busybox:latest

if ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd runc >/dev/null
fi
DIR=$(mktemp -d /tmp/bench-containerd.XXXXXX)
NS=kt-bench-ctrd-$$
PID=
cleanup() {
    if [ -n "$PID" ]; then
        ctr --address "$DIR/ctrd.sock" -n bench tasks ls -q 2>/dev/null | while read -r id; do
            ctr --address "$DIR/ctrd.sock" -n bench tasks kill -s KILL "$id" >/dev/null 2>&1 || true
        done
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    grep " $DIR/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS"
cat >"$DIR/config.toml" <<TOML
version = 2
root = "$DIR/root"
state = "$DIR/state"
[grpc]
  address = "$DIR/ctrd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
TOML
nsenter --net="/run/netns/$NS" containerd --config "$DIR/config.toml" >"$DIR/containerd.log" 2>&1 &
PID=$!
for _ in $(seq 100); do [ -S "$DIR/ctrd.sock" ] && break; sleep 0.1; done
CTR=(ctr --address "$DIR/ctrd.sock" -n bench)
skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci-archive:$DIR/busybox.tar:$IMAGE"
"${CTR[@]}" images import "$DIR/busybox.tar" >/dev/null

times=()
for i in $(seq "$ROUNDS"); do
    start=$(date +%s%N)
    "${CTR[@]}" run -d "$IMAGE" "c$i" sh -c 'exec sleep 3600' >/dev/null
    until [ "$("${CTR[@]}" tasks ls | awk -v id="c$i" '$1==id {print $3}')" = RUNNING ]; do sleep 0.005; done
    times+=($(( ($(date +%s%N) - start) / 1000 )))
    "${CTR[@]}" tasks kill -s KILL "c$i" >/dev/null
    until "${CTR[@]}" tasks delete "c$i" >/dev/null 2>&1; do sleep 0.01; done
    "${CTR[@]}" containers delete "c$i" >/dev/null
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
pick() { echo "$sorted" | sed -n "$(( ( ($1 * (ROUNDS - 1)) + 50 ) / 100 + 1 ))p"; }
echo "containerd + runc (ctr run -d, $ROUNDS rounds): p50 $(( $(pick 50) / 1000 )) ms, p99 $(( $(pick 99) / 1000 )) ms"
