#!/usr/bin/env bash
# The failover benchmark: what users feel when a backend fails behind HAProxy, with HAProxy's
# own health checks alone (baseline) vs the same HAProxy plus pcloud's referee (pcloud).
# See docs/bench-failover.md.
#
#   sudo bench/failover/run.sh [REPEATS]        (default 3 failures per kind and arm)
#
# Env: BUILD_DIR (default <repo>/build), RATE (40 req/s), TIMEOUT_MS (1000), WINDOW_MS
# (18000), HB_MS (agent heartbeat, 200), HB_TIMEOUT_MS (dped heartbeat timeout, 1000),
# ARMS ("baseline pcloud"), KINDS ("service hang crash"), KEEP=1 keeps the work dir.
# Needs root, libvirtd (scripts/setup-libvirt.sh) and haproxy; it configures BUILD_DIR if
# it is new and builds dped, pcloud-agent and failover_bench in it.
set -euo pipefail

REPEATS="${1:-3}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
BIN="$BUILD_DIR/bin"
RATE="${RATE:-40}"
TIMEOUT_MS="${TIMEOUT_MS:-1000}"
WINDOW_MS="${WINDOW_MS:-18000}"
HB_MS="${HB_MS:-200}"
HB_TIMEOUT_MS="${HB_TIMEOUT_MS:-1000}"
ARMS="${ARMS:-baseline pcloud}"
KINDS="${KINDS:-service hang crash}"
BACKEND=web
URI=qemu:///system

say() { echo "failover-bench: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (qemu:///system, signals to qemu)"
command -v haproxy >/dev/null || die "haproxy not installed (scripts/install-deps.sh)"
# Configure only a new tree (RelWithDebInfo); an existing one keeps its options. The
# targets need no tests, so a tree configured with PCLOUD_BUILD_TESTS=OFF builds them too.
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >&2
cmake --build "$BUILD_DIR" -j2 --target dped pcloud-agent failover_bench >&2 ||
    die "build failed: cmake --build $BUILD_DIR --target dped pcloud-agent failover_bench"
bash "$REPO/scripts/setup-libvirt.sh" >&2

base="$("$REPO/scripts/build-guest.sh" "$BIN/pcloud-agent" | sed -n 's/^GUEST_DIR=//p' | tail -n1)"
GUEST_DIR="$("$REPO/bench/failover/make-guest.sh" "$base" "$HB_MS" | sed -n 's/^GUEST_DIR=//p' | tail -n1)"
[ -n "$GUEST_DIR" ] || die "no guest image"

WORK="$(mktemp -d /tmp/pcloud-failover.XXXXXX)"
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
TAG="pcfo$$"
HAPROXY_PID=""; DPED_PID=""; HUB_PID=""
ulimit -n 65536 2>/dev/null || true

freePort() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cleanupArm() {
    [ -n "$DPED_PID" ] && kill -TERM "$DPED_PID" 2>/dev/null && wait "$DPED_PID" 2>/dev/null || true
    DPED_PID=""
    for d in "${DOMAINS[@]:-}"; do
        [ -n "$d" ] || continue
        virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        virsh -c "$URI" undefine "$d" >/dev/null 2>&1 || true
    done
    [ -n "$HAPROXY_PID" ] && kill "$HAPROXY_PID" 2>/dev/null && wait "$HAPROXY_PID" 2>/dev/null || true
    HAPROXY_PID=""
    [ -n "$HUB_PID" ] && kill -TERM "$HUB_PID" 2>/dev/null && wait "$HUB_PID" 2>/dev/null || true
    HUB_PID=""
}
cleanupAll() {
    cleanupArm
    if [ "${KEEP:-0}" = 1 ]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanupAll EXIT
trap 'exit 130' INT TERM

runArm() {
    local arm="$1"
    local dir="$WORK/$arm" dep="${TAG}${arm:0:1}"
    mkdir -p "$dir"
    local fe; fe="$(freePort)"
    local pa; pa="$(freePort)"
    local pb; pb="$(freePort)"
    local a="${dep}-a" b="${dep}-b"
    DOMAINS=("$a" "$b")
    local sock="$dir/haproxy.sock"

    # HAProxy as its documentation recommends for an HTTP backend: HTTP health checks every
    # 2 s, down after 3 failures, up after 2; retries with redispatch to another server.
    # The two arms use this same file; only the pcloud arm lets dped drive the socket.
    cat >"$dir/haproxy.cfg" <<EOF
global
    stats socket $sock mode 600 level admin
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option redispatch
    retries 3
frontend fe
    bind 127.0.0.1:$fe
    default_backend $BACKEND
backend $BACKEND
    balance roundrobin
    option httpchk GET /
    server $a 127.0.0.1:$pa check inter 2s fall 3 rise 2
    server $b 127.0.0.1:$pb check inter 2s fall 3 rise 2
EOF
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
    [ -S "$sock" ] || die "haproxy did not start: $(tail -n3 "$dir/haproxy.log")"

    "$BIN/failover_bench" hub --port-file "$dir/hub.port" --journal "$dir/journal.jsonl" \
        >"$dir/hub.log" 2>&1 &
    HUB_PID=$!
    for _ in $(seq 1 100); do [ -s "$dir/hub.port" ] && break; sleep 0.1; done
    [ -s "$dir/hub.port" ] || die "hub did not start ($dir/hub.log)"
    local hubPort; hubPort="$(cat "$dir/hub.port")"

    local refArgs=(--referee log)
    [ "$arm" = pcloud ] && refArgs=(--referee haproxy --socket "$sock" --backend "$BACKEND")
    "$BIN/failover_bench" model --state-dir "$dir/state" --deployable "$dep" --guest-dir "$GUEST_DIR" \
        --assembly "$a:$pa" --assembly "$b:$pb" --hb-interval "$HB_MS" --hb-timeout "$HB_TIMEOUT_MS" \
        "${refArgs[@]}"
    # The tiny guest's user-mode network, allowed explicitly (docs/security.md).
    printf 'qemu_commandline = netdev-user\n' >"$dir/pcloud.conf"
    chmod 644 "$dir/pcloud.conf"
    "$BIN/dped" --deployable "$dep" --state-dir "$dir/state" --broker "amqp://127.0.0.1:$hubPort" \
        --log-level info --config "$dir/pcloud.conf" >"$dir/dped.log" 2>&1 &
    DPED_PID=$!

    say "arm=$arm: booting $a (:$pa) and $b (:$pb) behind haproxy :$fe"
    "$BIN/failover_bench" wait-ready --socket "$sock" --backend "$BACKEND" --servers 2 \
        --stable-ms 3000 --timeout-ms 240000 || die "arm=$arm: guests never became ready (see $dir)"

    local i kind victim vport
    for kind in $KINDS; do
        for i in $(seq 1 "$REPEATS"); do
            if [ $((i % 2)) = 1 ]; then victim="$a"; vport="$pa"; else victim="$b"; vport="$pb"; fi
            say "arm=$arm kind=$kind run=$i victim=$victim"
            "$BIN/failover_bench" trial --arm "$arm" --kind "$kind" --frontend "$fe" --socket "$sock" \
                --backend "$BACKEND" --victim "$victim" --victim-port "$vport" --rate "$RATE" \
                --timeout-ms "$TIMEOUT_MS" --window-ms "$WINDOW_MS" | tee -a "$RESULTS" |
                python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("  failed=%s of %s  out_after_ms=%s  back_in_ms=%s  %s" % (j["failed"], j["sent"], j["time_to_out_ms"], j["time_to_back_in_ms"], j["by_outcome"]))' >&2
            "$BIN/failover_bench" wait-ready --socket "$sock" --backend "$BACKEND" --servers 2 \
                --stable-ms 3000 --timeout-ms 180000 || die "arm=$arm: no recovery after $kind (see $dir)"
        done
    done
    cp "$dir/dped.log" "$dir/haproxy.cfg" "$WORK/" 2>/dev/null || true
    cleanupArm
}

START=$SECONDS
for arm in $ARMS; do runArm "$arm"; done
cp "$RESULTS" "$BUILD_DIR/failover-results.jsonl" 2>/dev/null || true
"$BIN/failover_bench" report "$RESULTS"
say "done in $((SECONDS - START)) s; raw results: $BUILD_DIR/failover-results.jsonl"
