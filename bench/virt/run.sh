#!/usr/bin/env bash
# One command for the crash-signal benchmark: starts libvirtd if needed, builds the bench,
# then SIGKILLs the qemu of a tiny guest N times (default 15) and prints kill -> pidfd,
# kill -> channel EOF and kill -> libvirt STOPPED (median, p99, max). Needs root.
#   bench/virt/run.sh [N]      (BUILD_DIR=... picks the build tree; default build)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
bash scripts/setup-libvirt.sh >/dev/null
# Configure only a new tree (RelWithDebInfo); an existing one keeps its options (the bench
# needs no tests).
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "$BUILD_DIR" -j2 --target virt_crash_bench >/dev/null
exec "$BUILD_DIR/bin/virt_crash_bench" "${1:-15}"
