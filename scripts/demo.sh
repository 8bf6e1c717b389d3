#!/usr/bin/env bash
# The README main command: sets up a fresh Debian 12 machine, then runs pcloud's main job:
# cped on the embedded AMQP hub supervising a demo deployable ("demo") of two tiny QEMU
# guests on real libvirt, each running pcloud-agent and a busybox web server, and shows
# the events as they happen. Ctrl-C stops following; the deployable keeps running under
# cped until `scripts/demo.sh stop`.
#
#   scripts/demo.sh          set up, start, follow events
#   scripts/demo.sh stop     stop the demo deployable and cped (VMs are shut down)
#
# Environment: PCLOUD_DEMO_STATE (default /var/lib/pcloud-demo), PCLOUD_DEMO_PORT (hub
# port, default 5672), PCLOUD_DEMO_HTTP_BASE (first guest's web port on 127.0.0.1, 18081).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
STATE=${PCLOUD_DEMO_STATE:-/var/lib/pcloud-demo}
PORT=${PCLOUD_DEMO_PORT:-5672}
HTTP_BASE=${PCLOUD_DEMO_HTTP_BASE:-18081}
BROKER=amqp://127.0.0.1:$PORT
BIN=$REPO/build/bin
SH() { "$BIN/pcloudsh" --broker "$BROKER" "$@"; }
say() { echo "demo: $*"; }

if [ "${1:-}" = "stop" ]; then
    SH deployable_stop demo || true
    if [ -f "$STATE/cped.pid" ] && kill -0 "$(cat "$STATE/cped.pid")" 2>/dev/null; then
        kill "$(cat "$STATE/cped.pid")"
        say "cped stopped"
    fi
    exit 0
fi

bash scripts/install-deps.sh
bash scripts/setup-libvirt.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPCLOUD_BUILD_TESTS=OFF >/dev/null
cmake --build build -j2 --target cped dped pcloudsh pcloud-agent pcloud-guest-xml
GUEST_DIR=$(scripts/build-guest.sh "$BIN/pcloud-agent" | sed -n 's/^GUEST_DIR=//p' | tail -1)
[ -n "$GUEST_DIR" ] || { say "guest image build failed"; exit 1; }
mkdir -p "$STATE"

# cped: the one process an operator starts. Re-running the demo re-uses a running one.
if [ -f "$STATE/cped.pid" ] && kill -0 "$(cat "$STATE/cped.pid")" 2>/dev/null; then
    say "cped already running (pid $(cat "$STATE/cped.pid"))"
else
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        say "port $PORT is taken by another process (a RabbitMQ?); set PCLOUD_DEMO_PORT"
        exit 1
    fi
    # The tiny guest's network is QEMU user mode through <qemu:commandline>; pcloud refuses
    # that unless the host configuration allows it (docs/security.md), so the demo says so.
    printf '%s\n' "# pcloud demo host configuration (docs/security.md)" \
        "qemu_commandline = netdev-user" >"$STATE/pcloud.conf"
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
SH deployable_start demo
say "web servers: http://127.0.0.1:$HTTP_BASE/ and http://127.0.0.1:$((HTTP_BASE + 1))/"
say "in another terminal: $BIN/pcloudsh --broker $BROKER deployable_status demo"
say "following events (Ctrl-C to stop following; 'scripts/demo.sh stop' stops the demo)"
exec "$BIN/pcloudsh" --broker "$BROKER" events --follow --since 1 --deployable demo
