#!/usr/bin/env bash
# Builds (once) and caches the Debian 12 root that the agent's systemd integration test and
# benchmark boot with systemd-nspawn: systemd as PID 1, its own system D-Bus, nginx, and the
# agent's runtime libraries (Debian inside matches the host, so host-built binaries run).
#
# Idempotent: the root lives outside the clone (PCLOUD_NSPAWN_ROOT, default
# /var/cache/pcloud/nspawn-root) and is rebuilt only when missing or incomplete. It is built
# in a temporary directory next to it and renamed into place, so an interrupted run never
# leaves a half root that looks complete.
set -euo pipefail

ROOT="${PCLOUD_NSPAWN_ROOT:-/var/cache/pcloud/nspawn-root}"
STAMP="$ROOT/.pcloud-root-v1"
PACKAGES="systemd,systemd-sysv,dbus,nginx-light,libqpid-proton-cpp12,libsdbus-c++1"

complete() {
    [ -f "$STAMP" ] && [ -x "$ROOT/lib/systemd/systemd" ] && [ -x "$ROOT/usr/sbin/nginx" ] &&
        ls "$ROOT"/usr/lib/x86_64-linux-gnu/libqpid-proton-cpp.so.12* >/dev/null 2>&1 &&
        ls "$ROOT"/usr/lib/x86_64-linux-gnu/libsdbus-c++.so.1* >/dev/null 2>&1
}

if complete; then
    echo "setup-nspawn-root: $ROOT is ready"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-nspawn-root: $ROOT is missing or incomplete; run as root to build it" >&2
    exit 1
fi
for tool in debootstrap systemd-nspawn; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup-nspawn-root: $tool not found; run scripts/install-deps.sh" >&2
        exit 1
    fi
done

# The first URIs line of the deb822 sources names the Debian mirror this machine may reach.
MIRROR="${PCLOUD_DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$MIRROR" ] && [ -r /etc/apt/sources.list ]; then
    MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

parent=$(dirname "$ROOT")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.nspawn-root.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "setup-nspawn-root: building $ROOT from $MIRROR (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" "$MIRROR" >"$tmp.log" 2>&1 || {
    echo "setup-nspawn-root: debootstrap failed; last lines of its log:" >&2
    tail -n 20 "$tmp.log" >&2
    rm -f "$tmp.log"
    exit 1
}
rm -f "$tmp.log"
# The container shares the host's network namespace: keep units that would touch the
# host's network or consoles from starting, and give it a hostname of its own.
echo pcloud-guest >"$tmp/etc/hostname"
for unit in systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    getty@tty1.service console-getty.service apt-daily.timer apt-daily-upgrade.timer; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
done
# nginx listens on loopback port 38081 so it never collides with anything on the host's :80.
if [ -f "$tmp/etc/nginx/sites-available/default" ]; then
    sed -i -e 's/listen 80 default_server;/listen 127.0.0.1:38081 default_server;/' \
        -e '/listen \[::\]:80 default_server;/d' "$tmp/etc/nginx/sites-available/default"
fi
mkdir -p "$tmp/opt/pcloud"
touch "$tmp/.pcloud-root-v1"
rm -rf "$ROOT"
mv "$tmp" "$ROOT"
trap - EXIT
echo "setup-nspawn-root: $ROOT is ready"
