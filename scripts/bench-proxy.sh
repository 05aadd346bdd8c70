#!/bin/sh
# Service proxy benchmark (root; everything runs in network namespaces it
# creates and deletes): render/apply times for 1, 1,000 and 10,000 Services
# x 5 endpoints, full and one change, and connection latency to a ClusterIP
# with 10 vs 10,000 Services. Sizes can be given as arguments.
# BENCH_PROFILE=dev reuses the debug build (slower rendering, same nft).
set -eu
cd "$(dirname "$0")/.."
exec cargo bench --profile "${BENCH_PROFILE:-bench}" --bench proxy -- "$@"
