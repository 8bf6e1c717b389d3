#!/usr/bin/env bash
# The forgery bench's guest: the tiny guest (scripts/build-guest.sh, real agent) with the run's
# CA certificate and agent.conf lines (docs/guest.md "Signed commands"), so its agent takes
# only commands signed by its own deployable's dped (or an operator):
#   ca = /etc/pcloud/pki/ca.crt
#   deployable = DEPLOYABLE
#   log_level = info          (so its console shows every command it verifies and runs)
# The CA is made fresh by each run, so the image is rebuilt each time (a few seconds).
#   bench/forgery/make-guest.sh BASE_GUEST_DIR CA_CRT DEPLOYABLE OUT_DIR
set -euo pipefail
BASE="$1" CA="$2" DEP="$3" OUT="$4"
[ -f "$BASE/initrd.img" ] && [ -f "$BASE/vmlinuz" ] || { echo "make-guest: $BASE is no guest dir" >&2; exit 1; }
[ -f "$CA" ] || { echo "make-guest: no CA certificate at $CA" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/root"
(cd "$work/root" && gzip -dc "$BASE/initrd.img" | cpio -idm --quiet)
conf="$work/root/etc/pcloud/agent.conf"
[ -f "$conf" ] || { echo "make-guest: $BASE has no agent (etc/pcloud/agent.conf)" >&2; exit 1; }
mkdir -p "$work/root/etc/pcloud/pki"
cp "$CA" "$work/root/etc/pcloud/pki/ca.crt"
chmod 644 "$work/root/etc/pcloud/pki/ca.crt"
printf 'ca = /etc/pcloud/pki/ca.crt\ndeployable = %s\nlog_level = info\n' "$DEP" >>"$conf"
mkdir -p "$OUT"
(cd "$work/root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$OUT/initrd.img"
cp "$BASE/vmlinuz" "$OUT/vmlinuz"
echo "GUEST_DIR=$OUT"
