#!/bin/bash
# Local OCI registry for the tests: Debian's docker-registry (distribution 2.8) on
# 127.0.0.1:${KUBE_TEST_REGISTRY_PORT:-5000}, plain HTTP, no auth.
# Config, storage, log and PID file live in the cache dir ($KUBE_TEST_CACHE or .cache).
#
#   scripts/test-registry.sh start    start in the background (ok if already running)
#   scripts/test-registry.sh stop     stop the process from the PID file (only that one)
#   scripts/test-registry.sh status   exit 0 if running and answering, 1 otherwise
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBE_TEST_CACHE:-$REPO/.cache}
PORT=${KUBE_TEST_REGISTRY_PORT:-5000}
TIMEOUT=${KUBE_TEST_REGISTRY_TIMEOUT:-30}
DIR=$CACHE/registry
CONFIG=$DIR/config.yml
STORAGE=$DIR/storage
LOG=$DIR/registry.log
PIDFILE=$DIR/registry.pid
URL=http://127.0.0.1:$PORT/v2/

die() { echo "test-registry: ERROR: $*" >&2; exit 1; }

# The PID from the file, if that process is alive and is our registry.
our_pid() {
    local pid
    [ -f "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "docker-registry serve $CONFIG" || return 1
    echo "$pid"
}

answers() { curl -sf -o /dev/null --max-time 2 "$URL"; }

start() {
    local pid
    if pid=$(our_pid); then
        if answers; then
            echo "test-registry: already running (pid $pid) on 127.0.0.1:$PORT"
            return 0
        fi
    else
        command -v docker-registry >/dev/null ||
            die "docker-registry not found (run scripts/install-test-deps.sh)"
        command -v curl >/dev/null || die "curl not found (run scripts/install-test-deps.sh)"
        if answers; then
            die "something else already answers on $URL (set KUBE_TEST_REGISTRY_PORT)"
        fi
        mkdir -p "$STORAGE"
        cat >"$CONFIG" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STORAGE
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
  secret: kube-test-local-registry
EOF
        rm -f "$PIDFILE"
        nohup docker-registry serve "$CONFIG" </dev/null >"$LOG" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
    fi

    local deadline=$((SECONDS + TIMEOUT))
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG" >&2 || true
            rm -f "$PIDFILE"
            die "docker-registry exited during startup (log tail above, $LOG)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG" >&2 || true
            die "docker-registry (pid $pid) did not answer on $URL within ${TIMEOUT}s"
        fi
        sleep 0.1
    done
    echo "test-registry: running (pid $pid) on 127.0.0.1:$PORT, storage $STORAGE"
}

stop() {
    local pid
    if ! pid=$(our_pid); then
        rm -f "$PIDFILE"
        echo "test-registry: not running"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    echo "test-registry: stopped (pid $pid)"
}

status() {
    local pid
    if pid=$(our_pid) && answers; then
        echo "test-registry: running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    echo "test-registry: not running"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
