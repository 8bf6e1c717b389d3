#!/usr/bin/env bash
# pcloud-cts: randomized faults of the guests and of pcloud itself, each followed by audits
# (docs/cts.md). Sets up a live pcloud on this machine, on loopback only: cped with the
# embedded hub, its dped, two tiny QEMU guests with the real agent and a busybox web server,
# HAProxy in front driven by the referee, and open-loop HTTP load through HAProxy. The hub
# runs as an operator runs it: amqps with mutual TLS, certificates from a PKI made for the
# run (pcloud-pki init, then the cped and an operator certificate; cped issues the dped's).
#
#   sudo bench/cts/run.sh [ITERATIONS] [SEED]       (default 30 iterations, a random seed)
#
# Env: BUILD_DIR (default <repo>/build), RATE (50 req/s), HB_MS (agent heartbeat, 200),
# HB_TIMEOUT_MS (3000; the model default is 5000), MAX_STOP_MS (longest SIGSTOP of dped/cped and cped downtime, 10000),
# FAULTS (comma list, default all: see `pcloud-cts --help`), KEEP=1 keeps the work dir.
# Prints one line per iteration, then the table per fault kind; exits non-zero on any audit
# failure, with the seed to replay it.
set -euo pipefail

ITERATIONS="${1:-30}"
SEED="${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build}"
BIN="$BUILD_DIR/bin"
RATE="${RATE:-50}"
HB_MS="${HB_MS:-200}"
HB_TIMEOUT_MS="${HB_TIMEOUT_MS:-3000}"
MAX_STOP_MS="${MAX_STOP_MS:-10000}"
FAULTS="${FAULTS:-}"

say() { echo "cts-run: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (qemu:///system, signals to qemu and libvirtd)"
command -v haproxy >/dev/null || die "haproxy not installed (scripts/install-deps.sh)"
[ -f "$BUILD_DIR/CMakeCache.txt" ] ||
    cmake -S "$REPO" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j2 --target cped dped pcloudsh pcloud-agent pcloud-pki failover_bench pcloud-cts >/dev/null
bash "$REPO/scripts/setup-libvirt.sh" >&2

base="$("$REPO/scripts/build-guest.sh" "$BIN/pcloud-agent" | sed -n 's/^GUEST_DIR=//p' | tail -n1)"
GUEST_DIR="$("$REPO/bench/failover/make-guest.sh" "$base" "$HB_MS" | sed -n 's/^GUEST_DIR=//p' | tail -n1)"
[ -n "$GUEST_DIR" ] || die "no guest image"

# A free loopback port outside the kernel's ephemeral range (32768-60999), so no outgoing
# connection can take it between this probe and the server's bind.
freePort() {
    python3 -c 'import random, socket
while True:
    p = random.randint(20000, 31999); s = socket.socket()
    try: s.bind(("127.0.0.1", p)); print(p); break
    except OSError: pass
    finally: s.close()'
}
URI=qemu:///system
# Domains of an earlier run that was killed: pccts<PID>-* whose PID is gone.
for d in $(virsh -c "$URI" list --all --name | grep '^pccts' || true); do
    pid="${d#pccts}"; pid="${pid%%-*}"
    kill -0 "$pid" 2>/dev/null && continue
    virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
    virsh -c "$URI" undefine "$d" >/dev/null 2>&1 || true
done

WORK="$(mktemp -d /tmp/pcloud-cts.XXXXXX)"
STATE="$WORK/state"
mkdir -p "$STATE"
DEP=cts
A="pccts$$-a"; B="pccts$$-b"
PA="$(freePort)"; PB="$(freePort)"; FE="$(freePort)"; HUB="$(freePort)"
BROKER="amqps://127.0.0.1:$HUB"
SOCK="$STATE/haproxy.sock"

cleanup() {
    local rc=$?
    for f in "$STATE/cped.pid" "$STATE/haproxy.pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    # dped outlives cped by design; the lock file names it.
    pkill -f -- "--state-dir $STATE" 2>/dev/null || true
    for d in "$A" "$B"; do
        virsh -c "$URI" destroy "$d" >/dev/null 2>&1 || true
        virsh -c "$URI" undefine "$d" >/dev/null 2>&1 || true
    done
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# HAProxy with no health checks of its own (pcloud is the health checker). The servers'
# states survive a reload or restart through the state file, as HAProxy's docs recommend,
# and the listeners are passed to the new process (expose-fd listeners).
cat >"$STATE/haproxy.cfg" <<EOF
global
    stats socket $SOCK mode 600 level admin expose-fd listeners
    server-state-file $STATE/haproxy.state
defaults
    mode http
    load-server-state-from-file global
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    option redispatch
    retries 3
frontend fe
    bind 127.0.0.1:$FE
    default_backend $DEP
backend $DEP
    balance roundrobin
    server $A 127.0.0.1:$PA disabled
    server $B 127.0.0.1:$PB disabled
EOF
: >"$STATE/haproxy.state"
haproxy -c -q -f "$STATE/haproxy.cfg" || die "haproxy rejects $STATE/haproxy.cfg"
haproxy -D -f "$STATE/haproxy.cfg" -p "$STATE/haproxy.pid"
for _ in $(seq 1 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "haproxy did not start"

"$BIN/failover_bench" model --state-dir "$STATE" --deployable "$DEP" --guest-dir "$GUEST_DIR" \
    --assembly "$A:$PA" --assembly "$B:$PB" --hb-interval "$HB_MS" --hb-timeout "$HB_TIMEOUT_MS" \
    --referee haproxy --socket "$SOCK" --backend "$DEP"
# Host configuration: the tiny guests' user-mode network goes to QEMU through
# <qemu:commandline>, which a host allows only explicitly (docs/security.md).
# The PKI: the CA, cped's certificate (cped_name cts) and the operator's that pcloudsh and
# pcloud-cts present; cped issues dped.cts itself (it can read ca.key).
PKI="$STATE/pki"
"$BIN/pcloud-pki" --dir "$PKI" init >/dev/null
"$BIN/pcloud-pki" --dir "$PKI" issue --cped cts >/dev/null
"$BIN/pcloud-pki" --dir "$PKI" issue --operator cts >/dev/null
printf '%s\n' 'qemu_commandline = netdev-user' "pki_dir = $PKI" 'cped_name = cts' \
    'operator = cts' >"$STATE/pcloud.conf"
chmod 644 "$STATE/pcloud.conf"
CPED_CMD="$BIN/cped --state-dir $STATE --listen $BROKER --log-level info --config $STATE/pcloud.conf"
setsid $CPED_CMD >>"$STATE/cped.log" 2>&1 </dev/null &
echo $! >"$STATE/cped.pid"
PCLOUDSH="$BIN/pcloudsh --config $STATE/pcloud.conf"
SH() { $PCLOUDSH --broker "$BROKER" "$@"; }
for _ in $(seq 1 100); do SH deployable_list >/dev/null 2>&1 && break; sleep 0.1; done
SH deployable_start "$DEP" >/dev/null || die "deployable_start failed (see $STATE/cped.log)"
say "booting $A (:$PA) and $B (:$PB) behind haproxy 127.0.0.1:$FE"
"$BIN/failover_bench" wait-ready --socket "$SOCK" --backend "$DEP" --servers 2 \
    --stable-ms 2000 --timeout-ms 240000 || die "the guests never became ready (see $STATE)"

args=(--state-dir "$STATE" --deployable "$DEP" --broker "$BROKER" --pcloudsh "$PCLOUDSH"
      --cped-cmd "$CPED_CMD" --cped-pidfile "$STATE/cped.pid" --cped-log "$STATE/cped.log"
      --haproxy-cfg "$STATE/haproxy.cfg" --haproxy-pidfile "$STATE/haproxy.pid"
      --haproxy-socket "$SOCK" --backend "$DEP" --frontend "$FE"
      --assembly "$A:$PA" --assembly "$B:$PB" --seed "$SEED" --iterations "$ITERATIONS"
      --rate "$RATE" --hb-timeout-ms "$HB_TIMEOUT_MS" --max-pcloud-stop-ms "$MAX_STOP_MS"
      --out "$WORK/cts.jsonl")
[ -n "$FAULTS" ] && args+=(--faults "$FAULTS")
rc=0
"$BIN/pcloud-cts" "${args[@]}" || rc=$?
cp "$WORK/cts.jsonl" "$BUILD_DIR/cts-results.jsonl" 2>/dev/null || true
say "raw results: $BUILD_DIR/cts-results.jsonl"
exit "$rc"
