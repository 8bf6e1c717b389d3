#!/bin/sh
# A stand-in for dped in supervision tests: takes the deployable's lock like dped does,
# records each start, then behaves as STATE/fake-dped-NAME.mode says:
#   "run" (default): run until SIGTERM, then exit 0;  "exit N": exit with status N at once.
# Its arguments go to STATE/fake-dped-NAME.args (one line per start).
ARGS="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --deployable) NAME=$2; shift 2 ;;
        --state-dir) STATE=$2; shift 2 ;;
        *) shift ;;
    esac
done
trap 'exit 0' TERM
LOCK="$STATE/dped-$NAME.lock"
exec 9>>"$LOCK"
flock -n 9 || exit 75
echo $$ > "$LOCK"
echo $$ >> "$STATE/fake-dped-$NAME.starts"
echo "$ARGS" >> "$STATE/fake-dped-$NAME.args"
mode=$(cat "$STATE/fake-dped-$NAME.mode" 2>/dev/null || echo run)
case "$mode" in
    exit*) exit ${mode#exit } ;;
esac
while :; do
    sleep 1 9>&- &
    wait $!
done
