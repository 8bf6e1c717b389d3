#!/usr/bin/env bash
# One command for the agent benchmark: builds the root if needed, builds the agent and the
# bench, then SIGKILLs nginx in a real systemd guest KILLS times (default 100) and prints the
# kill -> 'failed' report latency (median, p99, max), the agent's RSS and its idle CPU.
#   bench/agent/run.sh [KILLS] [IDLE_SECONDS]     (BUILD_DIR=... to pick the build tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
bash scripts/setup-nspawn-root.sh
# agent_bench links the test peer and the nspawn guest of tests/agent: the tree needs the
# tests on, whatever configured it before (an existing tree keeps its build type).
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD_DIR" -DPCLOUD_BUILD_TESTS=ON >/dev/null
else
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
        -DPCLOUD_BUILD_TESTS=ON >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target pcloud-agent agent_bench >/dev/null
exec "$BUILD_DIR/bin/agent_bench" "${1:-100}" "${2:-10}"
