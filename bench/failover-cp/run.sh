#!/usr/bin/env bash
# One command for the control-plane failover bench (docs/ha.md "bench/failover-cp"): builds
# cped, dped, pcloudsh and the bench, then on three hosts in network namespaces (an etcd
# member, a cped and the real dped each) kills the leading cped KILLS times and cuts its link
# PARTITIONS times, with etcd's default timers and then tuned ones; prints p50/p99 of
# leader elected, floating address answering, first operator command, first dped command,
# side by side with the ratio. Needs root (network namespaces) and etcd (scripts/install-deps.sh).
#   sudo bench/failover-cp/run.sh [KILLS] [PARTITIONS]      (default 50 and 20; about 15 min)
#   (BUILD_DIR=... picks the build tree; default build.)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
[ "$(id -u)" -eq 0 ] || { echo "failover-cp: needs root (network namespaces)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "failover-cp: etcd not installed (scripts/install-deps.sh)" >&2; exit 1; }
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DPCLOUD_BUILD_TESTS=ON >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target cped dped pcloudsh failover_cp_bench >/dev/null
exec "$BUILD_DIR/bin/failover_cp_bench" "${1:-50}" "${2:-20}"
