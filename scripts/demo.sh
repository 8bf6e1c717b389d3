#!/usr/bin/env bash
# The README main command: sets up a fresh Debian 12 machine, then runs pcloud's main job:
# cped on the embedded AMQP hub supervising a demo deployable ("demo") of two tiny QEMU
# guests on real libvirt, each running pcloud-agent and a busybox web server, behind a
# real HAProxy whose membership pcloud drives through its runtime API (the referee), and
# shows the events as they happen. Ctrl-C stops following; the deployable and HAProxy keep
# running until `scripts/demo.sh stop`. The bus is what an operator runs: amqps with mutual
# TLS, from a PKI the demo makes in its state dir with the three commands of
# docs/security.md (pcloud-pki init, a cped and an operator certificate).
#
#   scripts/demo.sh          set up, start, follow events
#   scripts/demo.sh stop     stop the demo deployable (VMs are shut down), cped and HAProxy
#
# Environment: PCLOUD_DEMO_STATE (default /var/lib/pcloud-demo), PCLOUD_DEMO_PORT (hub
# port, default 5671), PCLOUD_DEMO_HTTP_BASE (first guest's web port on 127.0.0.1, 18081),
# PCLOUD_DEMO_LB_PORT (HAProxy's frontend on 127.0.0.1, default 18080).
#
# Everything the demo generates (domain XML, haproxy.cfg, the HAProxy admin socket, the
# PKI, logs, pid files) lives in the state dir and nowhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
STATE=${PCLOUD_DEMO_STATE:-/var/lib/pcloud-demo}
PORT=${PCLOUD_DEMO_PORT:-5671}
HTTP_BASE=${PCLOUD_DEMO_HTTP_BASE:-18081}
LB_PORT=${PCLOUD_DEMO_LB_PORT:-18080}
BROKER=amqps://127.0.0.1:$PORT
BIN=$REPO/build/bin
# pcloudsh finds the PKI and its operator certificate through the demo's host configuration.
SH() { "$BIN/pcloudsh" --config "$STATE/pcloud.conf" --broker "$BROKER" "$@"; }
say() { echo "demo: $*"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-}" = "stop" ]; then
    SH deployable_stop demo || true
    if alive "$STATE/cped.pid"; then
        kill "$(cat "$STATE/cped.pid")"
        say "cped stopped"
    fi
    if alive "$STATE/haproxy.pid"; then
        kill "$(cat "$STATE/haproxy.pid")"
        say "haproxy stopped"
    fi
    exit 0
fi

bash scripts/install-deps.sh
bash scripts/setup-libvirt.sh
# build/ is shared with the tests and the benchmarks: configure it only when it is new and
# never flip its options (tests on, the default), so `scripts/test.sh` and every
# bench/*/run.sh still find their targets after the demo ran.
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target cped dped pcloudsh pcloud-agent pcloud-guest-xml pcloud-pki
GUEST_DIR=$(scripts/build-guest.sh "$BIN/pcloud-agent" | sed -n 's/^GUEST_DIR=//p' | tail -1)
[ -n "$GUEST_DIR" ] || { say "guest image build failed"; exit 1; }
mkdir -p "$STATE"

# cped: the one process an operator starts. Re-running the demo re-uses a running one.
if alive "$STATE/cped.pid"; then
    say "cped already running (pid $(cat "$STATE/cped.pid"))"
else
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        say "port $PORT is taken by another process (a RabbitMQ?); set PCLOUD_DEMO_PORT"
        exit 1
    fi
    # The tiny guest's network is QEMU user mode through <qemu:commandline>; pcloud refuses
    # that unless the host configuration allows it (docs/security.md), so the demo says so.
    # The PKI, made once (a rerun keeps its certificates): the CA, cped's certificate and
    # the operator's; cped issues its dped's certificate itself, as it can read ca.key.
    if [ ! -f "$STATE/pki/ca.crt" ]; then
        "$BIN/pcloud-pki" --dir "$STATE/pki" init >/dev/null
        "$BIN/pcloud-pki" --dir "$STATE/pki" issue --cped demo >/dev/null
        "$BIN/pcloud-pki" --dir "$STATE/pki" issue --operator demo >/dev/null
        say "PKI made in $STATE/pki (CA, cped.demo, operator.demo)"
    fi
    printf '%s\n' "# pcloud demo host configuration (docs/security.md)" \
        "qemu_commandline = netdev-user" "pki_dir = $STATE/pki" "cped_name = demo" \
        "operator = demo" >"$STATE/pcloud.conf"
    chmod 644 "$STATE/pcloud.conf"
    setsid "$BIN/cped" --state-dir "$STATE" --listen "$BROKER" --config "$STATE/pcloud.conf" \
        >>"$STATE/cped.log" 2>&1 &
    echo $! >"$STATE/cped.pid"
    say "cped started (pid $!, log $STATE/cped.log)"
fi
for _ in $(seq 1 100); do SH deployable_list >/dev/null 2>&1 && break; sleep 0.1; done
SH deployable_list >/dev/null || { say "cped does not answer; see $STATE/cped.log"; exit 1; }

# The demo deployable, created once: two assemblies from the tiny guest, each with the
# busybox-httpd resource (process class, HTTP readiness probe).
if ! SH deployable_list | grep -qw demo; then
    # A domain left defined by an earlier demo with another state dir has another UUID,
    # and libvirt would refuse to define ours over it: clear it out if it is not running.
    for node in node01 node02; do
        case "$(virsh -c qemu:///system domstate "demo-$node" 2>/dev/null)" in
            "") ;;
            "shut off"|crashed) virsh -c qemu:///system undefine "demo-$node" >/dev/null ;;
            *) say "domain demo-$node is running outside this demo; destroy it first"; exit 1 ;;
        esac
    done
    SH deployable_create demo --uri qemu:///system
    i=0
    for node in node01 node02; do
        port=$((HTTP_BASE + i)); i=$((i + 1))
        "$BIN/pcloud-guest-xml" "demo-$node" --http-port "$port" \
            --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
            --console-log "$STATE/demo-$node.console.log" >"$STATE/demo-$node.xml"
        SH assembly_create "demo-$node" --domain-xml "$STATE/demo-$node.xml" --address "127.0.0.1:$port"
        SH assembly_resource_add httpd busybox-httpd "demo-$node"
        SH escalation_resource_set httpd "demo-$node" 3 60s
        SH deployable_assembly_add demo "demo-$node"
    done
fi

# HAProxy in front of the two guests, on loopback only. The servers are named after the
# assemblies (that is how pcloud finds them) and start in maintenance: pcloud puts each one
# in when its guest reports healthy, drains it before a planned stop and takes it out the
# moment the guest fails. No `check`: pcloud is the health checker. The admin socket is the
# referee's runtime API.
if alive "$STATE/haproxy.pid"; then
    say "haproxy already running (pid $(cat "$STATE/haproxy.pid"))"
else
    if (exec 3<>"/dev/tcp/127.0.0.1/$LB_PORT") 2>/dev/null; then
        say "port $LB_PORT is taken by another process; set PCLOUD_DEMO_LB_PORT"
        exit 1
    fi
    cat >"$STATE/haproxy.cfg" <<EOF
# Generated by scripts/demo.sh; pcloud drives the servers' state through the stats socket.
global
    stats socket $STATE/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    option redispatch
    retries 3
frontend demo
    bind 127.0.0.1:$LB_PORT
    default_backend demo
backend demo
    balance roundrobin
    server demo-node01 127.0.0.1:$HTTP_BASE disabled
    server demo-node02 127.0.0.1:$((HTTP_BASE + 1)) disabled
EOF
    haproxy -c -q -f "$STATE/haproxy.cfg" || { say "haproxy rejects $STATE/haproxy.cfg"; exit 1; }
    rm -f "$STATE/haproxy.sock"
    setsid haproxy -db -f "$STATE/haproxy.cfg" >>"$STATE/haproxy.log" 2>&1 </dev/null &
    echo $! >"$STATE/haproxy.pid"
    for _ in $(seq 1 50); do [ -S "$STATE/haproxy.sock" ] && break; sleep 0.1; done
    [ -S "$STATE/haproxy.sock" ] || { say "haproxy did not start; see $STATE/haproxy.log"; exit 1; }
    say "haproxy started (pid $(cat "$STATE/haproxy.pid"), config $STATE/haproxy.cfg)"
fi
# dped reads the referee when it starts, so it is set before the start (same value on a rerun).
SH referee_set demo haproxy "socket=$STATE/haproxy.sock" backend=demo >/dev/null
SH deployable_start demo
say "frontend (HAProxy): http://127.0.0.1:$LB_PORT/"
say "web servers: http://127.0.0.1:$HTTP_BASE/ and http://127.0.0.1:$((HTTP_BASE + 1))/"
say "in another terminal: $BIN/pcloudsh --config $STATE/pcloud.conf --broker $BROKER deployable_status demo"
say "try: kill -9 \$(cat /run/libvirt/qemu/demo-node01.pid) and watch its REFEREE go out and"
say "     back in while curl http://127.0.0.1:$LB_PORT/ keeps answering"
say "following events (Ctrl-C to stop following; 'scripts/demo.sh stop' stops the demo)"
exec "$BIN/pcloudsh" --config "$STATE/pcloud.conf" --broker "$BROKER" events --follow --since 1 \
    --deployable demo
