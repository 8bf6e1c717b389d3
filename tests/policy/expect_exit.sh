#!/bin/sh
# expect_exit.sh STATUS STDERR_REGEX COMMAND...: passes when COMMAND exits with STATUS and
# its stderr matches STDERR_REGEX (grep -E).
want=$1; pattern=$2; shift 2
err=$("$@" 2>&1 >/dev/null); got=$?
if [ "$got" -ne "$want" ]; then
    echo "FAIL: exit status $got, want $want; stderr: $err"; exit 1
fi
if ! printf '%s\n' "$err" | grep -Eq -- "$pattern"; then
    echo "FAIL: stderr does not match '$pattern': $err"; exit 1
fi
echo "ok: exit $got, stderr: $err"
