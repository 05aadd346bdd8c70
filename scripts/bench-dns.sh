#!/usr/bin/env bash
# Benchmark of the cluster DNS on this machine: queries/s and p50/p99 latency
# for cluster names, NXDOMAIN, PTR and forwarded names, from concurrent UDP
# clients on loopback (debug build, like the other tests).
# KUBE_DNS_BENCH_SECONDS sets the seconds per case (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --lib dns::bench_tests::bench -- --ignored --nocapture --test-threads=1 2>&1 \
    | grep -E 'cluster DNS benchmark|^(A |SRV|NXDOMAIN|PTR|forwarded)|panicked|error' | sed 's/^test .* \.\.\. //'
