#!/usr/bin/env bash
# Builds and runs the referee benchmark against a real haproxy (started and stopped by the
# benchmark itself on a private unix socket). Usage: bench/referee/run.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-bench}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPCLOUD_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j2 --target referee_bench >/dev/null
"$BUILD/bin/referee_bench" "${1:-50}"
