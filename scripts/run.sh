#!/bin/bash
# Run a local one-node cluster from this checkout (what `make run` does).
#
#   scripts/run.sh         build (cargo build --locked), start `kube server` in the
#                          background, wait for /readyz, apply examples/, print usage
#   scripts/run.sh stop    stop the server started by this script (PID file)
#   scripts/run.sh status  exit 0 if the server from the PID file is alive
#
# Env: KUBE_DATA_DIR (default /var/lib/kube), KUBE_RUN_TIMEOUT (default 120 s),
#      KUBE_TEST_CACHE (where fetch-clients.sh keeps the real kubectl),
#      KUBE_BIN (default target/debug/kube).
# The server writes its admin kubeconfig to $KUBE_DATA_DIR/admin.kubeconfig.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
DATA_DIR=${KUBE_DATA_DIR:-/var/lib/kube}
TIMEOUT=${KUBE_RUN_TIMEOUT:-120}
KUBE=${KUBE_BIN:-$REPO/target/debug/kube}
KUBECTL=$CACHE/bin/kubectl
KUBECONFIG_FILE=$DATA_DIR/admin.kubeconfig
LOG=$DATA_DIR/server.log
PIDFILE=$DATA_DIR/server.pid

die() { echo "run: ERROR: $*" >&2; exit 1; }

# The PID from the file, if that process is alive and is our `kube server`.
server_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "kube server --data-dir $DATA_DIR" || return 1
    echo "$pid"
}

stop() {
    local pid
    if ! pid=$(server_pid); then
        rm -f "$PIDFILE"
        echo "run: no kube server running for $DATA_DIR"
        stop_pods
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "run: kube server (pid $pid) ignored SIGTERM for 30 s, sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "run: kube server (pid $pid) stopped"
    stop_pods
}

# Containers outlive the server (as with k3s); stopping the cluster stops them
# too: every process in the kubepods cgroups, then this data dir's mounts.
stop_pods() {
    local procs mnt n=0
    for procs in /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs; do
        [ -f "$procs" ] || continue
        while read -r p; do
            kill -9 "$p" 2>/dev/null && n=$((n + 1))
        done <"$procs"
    done
    awk -v dir="$DATA_DIR/agent/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    for ctrl in /sys/fs/cgroup/*/kubepods; do
        find "$ctrl" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    echo "run: stopped $n container processes"
}

fail_with_log() {
    echo "run: ERROR: $*" >&2
    if [ -f "$LOG" ]; then
        echo "---- last 40 lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
    fi
    exit 1
}

ready() {
    [ -f "$KUBECONFIG_FILE" ] &&
        [ "$("$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=5s \
            get --raw /readyz 2>/dev/null)" = ok ]
}

start() {
    local pid
    command -v cargo >/dev/null || die "cargo not found in PATH"
    # Build dependencies (libseccomp-dev) and the local registry serving the
    # example app's busybox image (nothing is pulled from the internet).
    "$REPO/scripts/install-test-deps.sh"
    "$REPO/scripts/fetch-clients.sh" >/dev/null
    "$REPO/scripts/test-registry.sh" start
    "$REPO/scripts/build-test-images.sh"

    echo "run: cargo build --locked"
    (cd "$REPO" && cargo build --locked)
    [ -x "$KUBE" ] || die "$KUBE not built"

    mkdir -p "$DATA_DIR"
    if pid=$(server_pid); then
        echo "run: kube server already running (pid $pid), not restarting (use: $0 stop)"
    else
        echo "run: starting $KUBE server --data-dir $DATA_DIR (log: $LOG)"
        nohup "$KUBE" server --data-dir "$DATA_DIR" </dev/null >>"$LOG" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
    fi

    local deadline=$((SECONDS + TIMEOUT))
    while :; do
        kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; fail_with_log "kube server exited"; }
        ready && break
        [ "$SECONDS" -lt "$deadline" ] ||
            fail_with_log "kube server (pid $pid) not ready within ${TIMEOUT}s (https://127.0.0.1:6443/readyz)"
        sleep 0.5
    done
    echo "run: kube server ready (pid $pid)"

    if compgen -G "$REPO/examples/*.y*ml" >/dev/null || compgen -G "$REPO/examples/*.json" >/dev/null; then
        echo "run: kubectl apply -f examples/"
        "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" apply -f "$REPO/examples/" ||
            fail_with_log "kubectl apply -f examples/ failed"
    else
        echo "run: no manifests in examples/, nothing applied"
    fi

    cat <<EOF

kube is running (pid $pid, data in $DATA_DIR, log in $LOG).
Use it:
    export KUBECONFIG=$KUBECONFIG_FILE
    $KUBECTL get all -A
Stop it:
    $0 stop
EOF
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status)
        if pid=$(server_pid); then echo "run: kube server running (pid $pid)"; else
            echo "run: kube server not running"; exit 1; fi ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
