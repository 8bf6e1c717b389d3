#!/usr/bin/env bash
# One command for the forgery benchmark (docs/bench-forgery.md): starts libvirtd if needed,
# builds dped, the agent and the bench, then on two tiny TCG guests whose agents take only
# signed commands, with an in-process hub on amqps:// with authz (as cped runs it):
# SIGKILLs guest B's qemu KILLS times (default 10), then KILLS times more while a forger
# holding guest A's agent certificate floods the hub with MESSAGES forged messages (default
# 10^6, at least; it goes on until the kills are done). Prints the actions taken because of
# forged input (must be 0), crash latency side by side with the ratio, and the flood's figures.
#   bench/forgery/run.sh [MESSAGES] [KILLS] [HEARTBEAT_TIMEOUT_MS]
#   (BUILD_DIR=... picks the build tree; default build. FORGERY_KEEP=1 keeps the state dir;
#   FORGER_NICE=N renices the forger; FORGER_REPLY_QUEUES=N sets how many guessed reply
#   queues it tries to attach to, default 8; FORGER_SCHED_IDLE=1 runs the forger as SCHED_IDLE, a diagnostic arm.)
# Boots QEMU guests: run it under the machine's lock, flock /tmp/pcloud-qemu.lock bash ...
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR="${BUILD_DIR:-build}"
bash scripts/setup-libvirt.sh >/dev/null
# Configure only a new tree (RelWithDebInfo); an existing one keeps its build type.
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target dped pcloud-agent forgery_bench >/dev/null
exec "$BUILD_DIR/bin/forgery_bench" "${1:-1000000}" "${2:-10}" "${3:-3000}"
