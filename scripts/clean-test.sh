#!/bin/bash
# Remove what an interrupted test run may have left behind:
#   - network namespaces named kube-test-* or kt-* (and the processes still running in them)
#   - the cache's registry process (scripts/test-registry.sh stop)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)

if command -v ip >/dev/null; then
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(kube-test-|kt-)' | while read -r ns; do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086  # one PID per word
            kill -9 $pids 2>/dev/null || true
        fi
        if ip netns delete "$ns"; then
            echo "clean-test: deleted netns $ns"
        else
            echo "clean-test: WARNING: could not delete netns $ns" >&2
        fi
    done
fi

"$REPO/scripts/test-registry.sh" stop
