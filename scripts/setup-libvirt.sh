#!/usr/bin/env bash
# Starts libvirtd (QEMU driver) on a machine without systemd as PID 1, exactly as
# ../shared/ENVIRONMENT.md found works: the libvirt-qemu user the package forgets to create,
# a qemu.conf that runs QEMU as root without cgroups or a security driver, then virtlogd
# and libvirtd as plain daemons. Idempotent: run it as often as you like; it changes only
# what is missing and never duplicates config lines.
#
# Env: PCLOUD_LIBVIRT_WAIT_S (default 30) = how long to wait for libvirtd to answer.
set -euo pipefail

URI="qemu:///system"
WAIT_S="${PCLOUD_LIBVIRT_WAIT_S:-30}"
QEMU_CONF=/etc/libvirt/qemu.conf

say() { echo "setup-libvirt: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "needs root (creates users, edits $QEMU_CONF, starts libvirtd)" >&2
    exit 1
fi
for bin in libvirtd virtlogd virsh qemu-system-x86_64; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        say "$bin not found; run scripts/install-deps.sh first" >&2
        exit 1
    fi
done

# 1. Users and groups (libvirtd refuses to start without libvirt-qemu).
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
    useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
getent group libvirt >/dev/null || groupadd -r libvirt

# 2. qemu.conf: set KEY = VALUE, replacing an existing (or commented-out) setting of KEY
#    rather than appending a second one.
mkdir -p /etc/libvirt
touch "$QEMU_CONF"
setConf() {
    local key="$1" value="$2"
    if grep -qE "^[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF"; then
        # Already set: rewrite every active line for KEY to the wanted value.
        sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*$|${key} = ${value}|" "$QEMU_CONF"
    else
        printf '%s = %s\n' "$key" "$value" >>"$QEMU_CONF"
    fi
}
before="$(md5sum "$QEMU_CONF")"
setConf user '"root"'
setConf group '"root"'
setConf security_driver '"none"'
setConf cgroup_controllers '[ ]'
conf_changed=0
[ "$before" = "$(md5sum "$QEMU_CONF")" ] || conf_changed=1

# 3. Directories.
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt /var/cache/libvirt

answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

# A libvirtd that runs with an older qemu.conf must be restarted to pick up the change.
if [ "$conf_changed" = 1 ] && pgrep -x libvirtd >/dev/null; then
    say "qemu.conf changed; restarting libvirtd"
    pid="$(cat /run/libvirtd.pid 2>/dev/null || pgrep -xo libvirtd)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi

# 4. Daemons. They must not inherit our descriptors above stderr: a caller's flock(1) lock
# or a pipe held for the daemon's whole life would never be released.
daemon() {
    (
        for fd in /proc/self/fd/*; do
            fd="${fd##*/}"
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
        done
        exec "$@"
    ) </dev/null
}
if ! pgrep -x virtlogd >/dev/null; then
    say "starting virtlogd"
    daemon virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
    say "starting libvirtd"
    daemon libvirtd -d
fi

# 5. Wait until it answers, with a deadline.
deadline=$((SECONDS + WAIT_S))
until answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        say "libvirtd did not answer on $URI within ${WAIT_S}s; see /var/log/libvirt/" >&2
        exit 1
    fi
    sleep 0.2
done
say "libvirtd answers on $URI ($(virsh -c "$URI" version 2>/dev/null | grep -i 'running hypervisor' | sed 's/.*: *//'))"
