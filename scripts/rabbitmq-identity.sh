#!/usr/bin/env bash
# Maps a pcloud identity (docs/security.md, "Identities") to a RabbitMQ user for SASL EXTERNAL
# with `ssl_cert_login_from = common_name`: the user is the certificate's CN (`agent:node01`),
# it has no password, and its permissions are the identity's row of the authorization table,
# as far as RabbitMQ's permissions can say it (docs/security.md, "RabbitMQ").
#
#   rabbitmq-identity.sh add KIND:NAME [--events] [--assembly A]...
#   rabbitmq-identity.sh show KIND:NAME [--events] [--assembly A]...   # print, change nothing
#   rabbitmq-identity.sh expected KIND:NAME ...  # the lines rabbitmqctl list_permissions and
#                                                # list_topic_permissions would show for it
#   rabbitmq-identity.sh remove KIND:NAME
#
# --events gives the `events` role (pcloud-pki's OU=events, which RabbitMQ does not see):
# receiving pcloud.events*. --assembly names an assembly (name or uuid) of a dped's
# deployable, once per assembly; run `add` again when the deployable changes.
# Virtual host: PCLOUD_RABBITMQ_VHOST (default /). Needs rabbitmqctl (run as root).
# Idempotent: `add` on an existing user resets its password and permissions.
set -euo pipefail

usage() {
    echo "usage: $0 add|show|expected KIND:NAME [--events] [--assembly A]... | remove KIND:NAME" >&2
    exit 2
}
die() {
    echo "rabbitmq-identity: $*" >&2
    exit 1
}
# model::isValidName: 1-64 of [A-Za-z0-9_.-], not starting with '-' or '.'.
valid_name() { [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$ ]]; }
# Names hold only [A-Za-z0-9_.-]: '.' is the one regex metacharacter to escape.
re() { printf '%s' "${1//./\\.}"; }

[ $# -ge 2 ] || usage
action="$1"
identity="$2"
shift 2
case "$action" in add | show | expected | remove) ;; *) usage ;; esac

kind="${identity%%:*}"
name="${identity#*:}"
[ "$kind" != "$identity" ] || die "'$identity' is not KIND:NAME (e.g. agent:node01)"
case "$kind" in operator | cped | dped | agent | node) ;; *)
    die "'$kind' in '$identity' is not a kind (operator, cped, dped, agent, node)" ;;
esac
valid_name "$name" || die "'$name' in '$identity' is not a valid name (1-64 of A-Z a-z 0-9 _ . -, not starting with - or .)"

events=0
assemblies=()
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events=1 ;;
        --assembly)
            [ $# -ge 2 ] || die "--assembly needs a name"
            valid_name "$2" || die "'$2' (--assembly) is not a valid name"
            [ "$kind" = dped ] || die "--assembly is for dped identities, not $kind"
            assemblies+=("$(re "$2")")
            shift
            ;;
        *) usage ;;
    esac
    shift
done

vhost="${PCLOUD_RABBITMQ_VHOST:-/}"
ctl() { rabbitmqctl -q "$@"; }

if [ "$action" = remove ]; then
    if ctl list_users | awk '{ print $1 }' | grep -qxF "$identity"; then
        ctl delete_user "$identity" >/dev/null
        echo "rabbitmq-identity: removed $identity"
    else
        echo "rabbitmq-identity: $identity has no RabbitMQ user"
    fi
    exit 0
fi

n="$(re "$name")"
join() {
    local IFS='|'
    printf '%s' "$*"
}
# Queues this identity sends to and receives from (the table in docs/security.md), and the
# routing keys on amq.topic (topics and private reply topics) it may publish and bind.
send=()
recv=()
topic_write='pcloud\.reply\..*'
topic_read='pcloud\.reply\..*'
events_re='pcloud\.events|pcloud\.events\..*'
case "$kind" in
    operator)
        send=('pcloud\.cped')
        events=1
        ;;
    cped)
        send=('pcloud\..*')
        recv=('pcloud\.cped' 'pcloud\.journal')
        topic_write='pcloud\..*'
        events=1
        ;;
    dped)
        send=('pcloud\.journal' 'pcloud\.node\..*')
        recv=("pcloud\\.dped\\.$n" 'pcloud\.nodes\..*')
        if [ ${#assemblies[@]} -gt 0 ]; then
            a="($(join "${assemblies[@]}"))"
            send+=("pcloud\\.agent\\.$a")
            recv+=("pcloud\\.reports\\.$a")
        fi
        ;;
    agent)
        send=("pcloud\\.reports\\.$n")
        recv=("pcloud\\.agent\\.$n")
        ;;
    node)
        send=("pcloud\\.nodes\\.$n")
        recv=("pcloud\\.node\\.$n")
        ;;
esac
[ "$events" = 1 ] && topic_read="$topic_read|$events_re"

# configure: declaring a queue, which the AMQP 1.0 plugin does for every /queue/ link (sender
# or receiver), and the server-named amq.gen-* queue behind each /topic/ subscription.
# write: publishing goes through an exchange (amq.default for /queue/, amq.topic for /topic/),
# and binding a subscription queue needs write on that queue. read: consuming from a queue,
# and binding needs read on amq.topic; the topic permissions then limit the routing keys.
all=("${send[@]}" "${recv[@]}")
configure="^($(join "${all[@]}")|amq\\.gen-.*)\$"
write='^(amq\.default|amq\.topic|amq\.gen-.*)$'
if [ ${#recv[@]} -gt 0 ]; then
    read_re="^($(join "${recv[@]}")|amq\\.topic|amq\\.gen-.*)\$"
else
    read_re='^(amq\.topic|amq\.gen-.*)$'
fi
topic_write="^($topic_write)\$"
topic_read="^($topic_read)\$"

if [ "$action" = expected ]; then
    printf '%s\t%s\t%s\t%s\n' "$identity" "$configure" "$write" "$read_re"
    printf '%s\tamq.topic\t%s\t%s\n' "$identity" "$topic_write" "$topic_read"
    exit 0
fi
if [ "$action" = show ]; then
    printf 'user        %s\nvhost       %s\nconfigure   %s\nwrite       %s\nread        %s\n' \
        "$identity" "$vhost" "$configure" "$write" "$read_re"
    printf 'topic write %s (amq.topic)\ntopic read  %s (amq.topic)\n' "$topic_write" "$topic_read"
    exit 0
fi

if ! ctl list_users | awk '{ print $1 }' | grep -qxF "$identity"; then
    # A random password, cleared at once: the user logs in only with its certificate.
    ctl add_user "$identity" "$(head -c 24 /dev/urandom | base64)" >/dev/null
fi
ctl clear_password "$identity" >/dev/null
ctl set_permissions -p "$vhost" "$identity" "$configure" "$write" "$read_re" >/dev/null
ctl set_topic_permissions -p "$vhost" "$identity" amq.topic "$topic_write" "$topic_read" >/dev/null
echo "rabbitmq-identity: $identity may configure $configure, write $write, read $read_re;" \
    "amq.topic keys: write $topic_write, read $topic_read"
