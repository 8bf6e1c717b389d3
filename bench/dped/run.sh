#!/usr/bin/env bash
# One command for the dped benchmark: starts libvirtd if needed, builds dped, the agent and
# the bench, then on two tiny TCG guests SIGKILLs a qemu KILLS times (default 10) and
# SIGSTOPs it STOPS times (default 3), then kills two guests' qemus back to back PAIRS times
# (default 5), printing median/p99/max of every step and dped's RSS.
#   bench/dped/run.sh [KILLS] [STOPS] [ASSEMBLIES] [HEARTBEAT_TIMEOUT_MS] [PAIRS]
#   (BUILD_DIR=... picks the build tree; default build. DPED_BIN=... runs another dped
#   build, e.g. an older commit's, as the baseline arm.)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
bash scripts/setup-libvirt.sh >/dev/null
# Configure only a new tree (RelWithDebInfo); an existing one keeps its build type.
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "$BUILD_DIR" -j2 --target dped pcloud-agent dped_bench >/dev/null
exec "$BUILD_DIR/bin/dped_bench" "${1:-10}" "${2:-3}" "${3:-2}" "${4:-3000}" "${5:-5}"
