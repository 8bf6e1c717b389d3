#!/usr/bin/env bash
# Derives the failover benchmark's guest from the standard tiny guest (scripts/build-guest.sh):
#   - the agent heartbeats every HB_MS (agent.conf heartbeat_interval; default 1s there), so
#     dped can tell a hung guest within a few hundred ms;
#   - /www/cgi-bin/die, a CGI that SIGKILLs the guest's httpd listener from inside the
#     guest: a real in-guest service death the host can trigger (the guest has no exec
#     channel), and /www/cgi-bin/kill-agent, the same for pcloud-agent (pcloud-cts).
#     Test-only: anyone who can reach the guest's port 80 can kill its web server.
#
#   bench/failover/make-guest.sh BASE_GUEST_DIR HB_MS [OUT_DIR]
# Prints GUEST_DIR=<dir> last. Rebuilt only when the base image, HB_MS or this script change.
set -euo pipefail
BASE="$1"
HB_MS="$2"
OUT="${3:-/var/cache/pcloud/guest/failover-hb${HB_MS}}"
[ -f "$BASE/initrd.img" ] && [ -f "$BASE/vmlinuz" ] || { echo "make-guest: no image in $BASE" >&2; exit 1; }

KEY="$( { cat "$BASE/key"; echo "hb=$HB_MS"; sha256sum "$0" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)"
if [ -f "$OUT/initrd.img" ] && [ "$(cat "$OUT/key" 2>/dev/null)" = "$KEY" ]; then
    echo "GUEST_DIR=$OUT"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/root"
(cd "$work/root" && gzip -dc "$BASE/initrd.img" | cpio -idm --quiet)
conf="$work/root/etc/pcloud/agent.conf"
[ -f "$conf" ] || { echo "make-guest: $BASE has no agent (etc/pcloud/agent.conf); build it with the real agent" >&2; exit 1; }
sed -i -E "s|^heartbeat_interval *=.*|heartbeat_interval = ${HB_MS}ms|" "$conf"
grep -q "^heartbeat_interval = ${HB_MS}ms" "$conf" || echo "heartbeat_interval = ${HB_MS}ms" >>"$conf"
mkdir -p "$work/root/www/cgi-bin"
cat >"$work/root/www/cgi-bin/die" <<'EOF'
#!/bin/sh
# Benchmark only: SIGKILL the httpd listener this request came through. busybox httpd forks
# one child per connection, which forks this CGI: our parent's parent is the listener.
conn=$PPID
main=$(cut -d' ' -f4 /proc/$conn/stat)
printf 'Content-Type: text/plain\r\n\r\nkilling httpd listener pid %s\n' "$main"
kill -9 "$main"
EOF
chmod 755 "$work/root/www/cgi-bin/die"
# pcloud-cts: SIGKILL of the agent inside the guest (its init restarts it after 150 ms).
cat >"$work/root/www/cgi-bin/kill-agent" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\nkilling pcloud-agent pid %s\n' "$(cat /run/pcloud-agent.pid)"
kill -9 "$(cat /run/pcloud-agent.pid)"
EOF
chmod 755 "$work/root/www/cgi-bin/kill-agent"
(cd "$work/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >"$work/initrd.img"
mkdir -p "$OUT"
cp "$BASE/vmlinuz" "$OUT/vmlinuz.new" && mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv "$work/initrd.img" "$OUT/initrd.img"
echo "$KEY" >"$OUT/key"
echo "make-guest: built $OUT (heartbeat ${HB_MS}ms, /www/cgi-bin/die)" >&2
echo "GUEST_DIR=$OUT"
