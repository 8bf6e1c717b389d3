#!/usr/bin/env bash
# Builds pcloud's tiny test guest: Debian's cloud kernel plus a busybox initramfs holding
# the virtio modules, pcloud-agent (with its shared libraries and loader) and guest/init.
# See docs/guest.md.
#
#   scripts/build-guest.sh AGENT_BINARY [OUT_DIR]
#
# AGENT_BINARY is the pcloud-agent executable, or "none" for a stand-in image whose init runs
# busybox httpd and echoes on the virtio channel. OUT_DIR defaults to /var/cache/pcloud/guest
# (outside the clone, so CI runs and clones share it). Results:
#   OUT_DIR/agent/{vmlinuz,initrd.img,key}   for a real agent
#   OUT_DIR/none/{vmlinuz,initrd.img,key}    for the stand-in
# The initramfs is rebuilt only when the key (hash of the agent binary, this script,
# guest/init, guest/shutdown-hook, busybox and the kernel version) changed. The last line
# printed is
#   GUEST_DIR=OUT_DIR/VARIANT
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 AGENT_BINARY|none [OUT_DIR]" >&2
    exit 2
fi
AGENT="$1"
OUT_DIR="${2:-/var/cache/pcloud/guest}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
INIT_SRC="$REPO/guest/init"
HOOK_SRC="$REPO/guest/shutdown-hook"
BUSYBOX=/bin/busybox
# In insmod order. button + evdev: the ACPI power button as an input device for acpid
# (graceful shutdown); virtio_blk: a test's disk.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_console failover net_failover virtio_net virtio_blk button evdev"

say() { echo "build-guest: $*" >&2; }
die() { say "$*"; exit 1; }

if [ "$AGENT" = none ]; then
    VARIANT=none
else
    [ -f "$AGENT" ] || die "agent binary '$AGENT' does not exist (build it, or pass 'none')"
    [ -x "$AGENT" ] || die "agent binary '$AGENT' is not executable"
    AGENT="$(readlink -f "$AGENT")"
    VARIANT=agent
fi
[ -f "$INIT_SRC" ] || die "guest init '$INIT_SRC' is missing"
[ -f "$HOOK_SRC" ] || die "guest shutdown hook '$HOOK_SRC' is missing"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' ||
    die "$BUSYBOX is not the static busybox; install busybox-static"
for bin in cpio gzip dpkg apt-get; do
    command -v "$bin" >/dev/null || die "$bin not found; run scripts/install-deps.sh"
done

mkdir -p "$OUT_DIR"
# One builder at a time per cache (tests and the benchmark may race here).
exec 9>"$OUT_DIR/.lock"
flock 9

# --- 1. The kernel: newest linux-image-6.1.0-*-cloud-amd64 apt knows, cached by version. ---
newestKernel() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64$' 2>/dev/null |
        awk '{print $1}' | sed 's/^linux-image-//' | sort -V | tail -n1 || true
}
KVER="$(newestKernel)"
if [ -z "$KVER" ] && [ -z "$(ls "$OUT_DIR/kernel" 2>/dev/null)" ] && [ "$(id -u)" -eq 0 ]; then
    # A fresh machine whose apt lists were never fetched knows no kernel package yet.
    say "apt knows no cloud kernel; running apt-get update"
    apt-get update -qq >/dev/null 2>&1 || true
    KVER="$(newestKernel)"
fi
if [ -z "$KVER" ]; then
    # apt lists missing (no apt-get update yet, or offline): take the newest cached kernel.
    KVER="$(ls "$OUT_DIR/kernel" 2>/dev/null | sort -V | tail -n1 || true)"
    [ -n "$KVER" ] || die "no linux-image-6.1.0-*-cloud-amd64 known to apt (run apt-get update) and none cached in $OUT_DIR/kernel"
fi
KDIR="$OUT_DIR/kernel/$KVER"
# The kernel cache holds only the modules listed when it was made: a cache made with a
# shorter MODULES list is fetched again.
if [ ! -f "$KDIR/vmlinuz" ] || [ "$(cat "$KDIR/modules.list" 2>/dev/null)" != "$MODULES" ]; then
    say "fetching kernel linux-image-$KVER"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    chmod 755 "$tmp"
    (cd "$tmp" && apt-get download -q "linux-image-$KVER" >/dev/null 2>&1) ||
        die "apt-get download linux-image-$KVER failed"
    dpkg -x "$tmp"/linux-image-"$KVER"_*.deb "$tmp/root"
    mkdir -p "$tmp/k/modules"
    cp "$tmp/root/boot/vmlinuz-$KVER" "$tmp/k/vmlinuz"
    for m in $MODULES; do
        f="$(find "$tmp/root/lib/modules/$KVER" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)"
        if [ -z "$f" ]; then
            if grep -q "/$m.ko\$" "$tmp/root/lib/modules/$KVER/modules.builtin" 2>/dev/null; then
                continue # built into this kernel
            fi
            die "module $m not found in linux-image-$KVER"
        fi
        case "$f" in
            *.xz) xz -dc "$f" >"$tmp/k/modules/$m.ko" ;;
            *.zst) zstd -qdc "$f" >"$tmp/k/modules/$m.ko" ;;
            *) cp "$f" "$tmp/k/modules/$m.ko" ;;
        esac
    done
    echo "$MODULES" >"$tmp/k/modules.list"
    mkdir -p "$OUT_DIR/kernel"
    rm -rf "$KDIR"
    mv "$tmp/k" "$KDIR"
    rm -rf "$tmp"
    trap - EXIT
fi

# --- 2. The key: everything that goes into the initramfs. ---
agent_hash=none
[ "$VARIANT" = agent ] && agent_hash="$(sha256sum "$AGENT" | cut -d' ' -f1)"
KEY="$( {
    echo "agent=$agent_hash"
    echo "kernel=$KVER"
    sha256sum "$0" "$INIT_SRC" "$HOOK_SRC" "$BUSYBOX" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)"
DEST="$OUT_DIR/$VARIANT"
if [ -f "$DEST/initrd.img" ] && [ -f "$DEST/vmlinuz" ] && [ "$(cat "$DEST/key" 2>/dev/null)" = "$KEY" ]; then
    say "up to date variant=$VARIANT kernel=$KVER key=${KEY:0:12}"
    echo "GUEST_DIR=$DEST"
    exit 0
fi

# --- 3. The initramfs. ---
say "building initramfs variant=$VARIANT kernel=$KVER key=${KEY:0:12}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/pcloud,lib/modules,proc,sys,dev,tmp,run,www,var/log}
cp "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$INIT_SRC" "$root/init"
mkdir -p "$root/etc/acpi/PWRF"
install -m 0755 "$HOOK_SRC" "$root/etc/acpi/PWRF/00000080"
for m in $MODULES; do
    [ -f "$KDIR/modules/$m.ko" ] && cp "$KDIR/modules/$m.ko" "$root/lib/modules/"
    echo "$m" >>"$root/etc/pcloud/modules"
done
# Minimal identity files, so libc lookups of users and hosts behave.
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo '127.0.0.1 localhost' >"$root/etc/hosts"

if [ "$VARIANT" = agent ]; then
    # Without its debug info: the initramfs is unpacked into the guest's RAM (128 MiB), and a
    # RelWithDebInfo agent (20 MB) with its libraries no longer fits ("Initramfs unpacking
    # failed: write error", then /bin/pcloud-agent "not found" for want of its loader).
    strip --strip-debug -o "$root/bin/pcloud-agent" "$AGENT"
    # Its shared libraries and the loader, at the paths ldd resolves them to.
    ldd "$AGENT" | awk '/=> \//{print $3} /^[[:space:]]*\//{print $1}' | sort -u | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    # The loader is also found via /lib64 by the ELF interpreter path on Debian.
    # Cyrus SASL (pulled in by Proton) loads its mechanisms as plugins at run time.
    for d in /usr/lib/x86_64-linux-gnu/sasl2; do
        if [ -d "$d" ]; then
            mkdir -p "$root$d"
            cp -L "$d"/*.so* "$root$d/" 2>/dev/null || true
        fi
    done
    cat >"$root/etc/pcloud/agent.conf" <<'EOF'
connect = virtio:org.pcloud.agent.0
backend = process
heartbeat_interval = 1s
watch = httpd
process.httpd = /bin/busybox httpd -f -p 80 -h /www
probe.httpd = http 127.0.0.1 80 / 200
EOF
fi

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >"$work/initrd.img"
new="$OUT_DIR/.$VARIANT.new.$$"
rm -rf "$new"
mkdir -p "$new"
cp "$KDIR/vmlinuz" "$new/vmlinuz"
mv "$work/initrd.img" "$new/initrd.img"
echo "$KEY" >"$new/key"
echo "$KVER" >"$new/kernel-version"
rm -rf "$DEST"
mv "$new" "$DEST"
say "built $DEST/initrd.img ($(du -h "$DEST/initrd.img" | cut -f1))"
echo "GUEST_DIR=$DEST"
