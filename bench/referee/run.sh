#!/usr/bin/env bash
# Builds and runs the referee benchmarks against a real haproxy (started and stopped by the
# benchmark itself on a private unix socket) and a real nginx (own prefix dir in /tmp).
# Usage: bench/referee/run.sh [runs] [nginx-runs]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPCLOUD_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target referee_bench referee_nginx_bench >/dev/null
"$BUILD/bin/referee_bench" "${1:-50}"
"$BUILD/bin/referee_nginx_bench" "${2:-20}"
