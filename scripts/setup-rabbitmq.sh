#!/usr/bin/env bash
# Opt-in: makes a RabbitMQ 3.10 broker with the AMQP 1.0 plugin answer on 127.0.0.1, so
# tests/bus can prove pcloud's bus client works against an external broker as well as against
# the embedded hub: plain AMQP with guest:guest on 5682 (PCLOUD_RABBITMQ_PORT), and mutual TLS
# with SASL EXTERNAL on 5683 (PCLOUD_RABBITMQ_TLS_PORT), the certificate's CN being the
# RabbitMQ user (docs/security.md, "RabbitMQ"). It installs rabbitmq-server only when
# PCLOUD_TEST_RABBITMQ=1; if the package is already installed it (re)starts the broker;
# otherwise it does nothing, and the RabbitMQ tests SKIP with a reason. Idempotent: safe to
# run on every test run; a broker already running with another configuration (e.g. one
# started before the TLS listener existed) is stopped and started again.
#
# The test PKI lives in $pki (root:rabbitmq 0750): ca.crt and ca.key (Ed25519 like
# pcloud-pki's CA; the key root-only, the RabbitMQ TLS test issues its client certificates
# with lib/pki from it) and the broker's server.crt/server.key. Loopback only.
#
# No systemd here (see shared/ENVIRONMENT.md): the broker is started in the background by hand.
# Its log goes to /var/log/rabbitmq/pcloud-setup.log.
set -euo pipefail

want="${PCLOUD_TEST_RABBITMQ:-0}"
# Not 5672: that is the embedded hub's default, and the demo must be able to use it.
port="${PCLOUD_RABBITMQ_PORT:-5682}"
tls_port="${PCLOUD_RABBITMQ_TLS_PORT:-5683}"
pki=/etc/rabbitmq/pcloud-test-pki
conf=/etc/rabbitmq/rabbitmq.conf
here="$(cd "$(dirname "$0")" && pwd)"
# Loopback only, Erlang's ports too: epmd (started by whichever of rabbitmq-server,
# rabbitmqctl or rabbitmq-plugins comes first) and the inter-node port.
export ERL_EPMD_ADDRESS=127.0.0.1
t0=$(date +%s.%N)

installed() { dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q "install ok installed"; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-rabbitmq: $1; run as root" >&2
        exit 1
    fi
}

if ! installed; then
    if [ "$want" != "1" ]; then
        echo "setup-rabbitmq: not installed and PCLOUD_TEST_RABBITMQ!=1; skipping (RabbitMQ tests will SKIP)"
        exit 0
    fi
    need_root "rabbitmq-server missing; installing it needs root"
    echo "setup-rabbitmq: installing rabbitmq-server"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps the package's scripts from trying to start the broker (no systemd).
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
    echo "setup-rabbitmq: installed after $(elapsed) s"
fi

# What the broker must run with; compared with what is on disk so a rerun changes nothing.
desired_conf() {
    cat <<CONF
# Written by pcloud's scripts/setup-rabbitmq.sh (test broker, loopback only); rerunning it
# rewrites this file and restarts the broker when the file changes.
listeners.tcp.default = 127.0.0.1:$port
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $pki/ca.crt
ssl_options.certfile = $pki/server.crt
ssl_options.keyfile = $pki/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
# pcloud's certificates are Ed25519, which Erlang's TLS signs and verifies in TLS 1.3.
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
# EXTERNAL (rabbitmq_auth_mechanism_ssl) is offered on TLS connections only; PLAIN stays for
# the plain listener's guest:guest test.
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
ssl_cert_login_from = common_name
# An AMQP 1.0 connection without SASL would otherwise be logged in as guest.
amqp1_0.default_user = none
CONF
}
plugins_ok() {
    grep -q rabbitmq_amqp1_0 /etc/rabbitmq/enabled_plugins 2>/dev/null &&
        grep -q rabbitmq_auth_mechanism_ssl /etc/rabbitmq/enabled_plugins 2>/dev/null
}
pki_ok() {
    [ -s $pki/ca.crt ] && [ -s $pki/ca.key ] && [ -s $pki/server.crt ] && [ -s $pki/server.key ] &&
        openssl verify -CAfile $pki/ca.crt $pki/server.crt >/dev/null 2>&1 &&
        openssl x509 -checkend 86400 -noout -in $pki/server.crt >/dev/null 2>&1
}
conf_ok() { [ -f $conf ] && [ "$(cat $conf)" = "$(desired_conf)" ]; }
# The user-id tests (tests/shell rabbitmq_cped_test, tests/dped rabbitmq_dped_test) run a real
# dped of deployable web holding n1 (its name and uuid) and its agent agent:n1. Each entry is
# the arguments of rabbitmq-identity.sh after add.
users=(operator:alice cped:test agent:node01 agent:node02 agent:n1
    "dped:web --assembly n1 --assembly 0b5e1c57-1d2a-4c8e-9f00-5e1f00000001")
# Each rabbitmqctl call starts an Erlang VM (seconds on a loaded machine): list what is there
# once and add only the users whose permissions differ from rabbitmq-identity.sh's.
add_users() {
    local have added=()
    have="$(rabbitmqctl -q list_permissions -p / && rabbitmqctl -q list_topic_permissions -p /)"
    for u in "${users[@]}"; do
        local missing=0 line
        while IFS= read -r line; do
            grep -qxF -- "$line" <<<"$have" || missing=1
        # shellcheck disable=SC2086 # an entry is an identity and its options
        done < <(bash "$here/rabbitmq-identity.sh" expected $u)
        if [ "$missing" = 1 ]; then
            # shellcheck disable=SC2086
            bash "$here/rabbitmq-identity.sh" add $u >/dev/null
            added+=("${u%% *}")
        fi
    done
    local names=()
    for u in "${users[@]}"; do names+=("${u%% *}"); done
    echo "setup-rabbitmq: users for SASL EXTERNAL: ${names[*]} (set up now: ${added[*]:-none})"
}

if plugins_ok && pki_ok && conf_ok && answers "$port" && answers "$tls_port"; then
    echo "setup-rabbitmq: ports $port and $tls_port (TLS) already answer with this configuration"
    if [ "$(id -u)" -eq 0 ]; then add_users; fi
    exit 0
fi
if [ "$(id -u)" -ne 0 ] && answers "$port" && answers "$tls_port"; then
    # The PKI dir is root-only: a non-root caller cannot check more than this.
    echo "setup-rabbitmq: ports $port and $tls_port (TLS) answer (configuration not checked: not root)"
    exit 0
fi
need_root "the broker needs setting up or starting"

# Enabling a plugin offline only edits /etc/rabbitmq/enabled_plugins: cheap and idempotent.
plugins_ok || rabbitmq-plugins --offline enable rabbitmq_amqp1_0 rabbitmq_auth_mechanism_ssl >/dev/null

if ! pki_ok; then
    # A fresh CA, then the server's certificate. Ed25519 like pcloud-pki, so lib/pki can issue
    # client certificates from this CA. Client certificates never check the broker's name
    # (VERIFY_PEER, chain only), but the SAN makes name-checking clients work too.
    echo "setup-rabbitmq: making the test PKI in $pki"
    install -d -m 0750 -o root -g rabbitmq $pki
    rm -f $pki/ca.crt $pki/ca.key $pki/server.crt $pki/server.key $pki/server.csr
    (
        umask 077
        openssl genpkey -algorithm ED25519 -out $pki/ca.key
        openssl req -x509 -new -key $pki/ca.key -days 3650 -subj "/O=pcloud/CN=pcloud RabbitMQ test CA" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out $pki/ca.crt
        openssl genpkey -algorithm ED25519 -out $pki/server.key
        openssl req -new -key $pki/server.key -subj "/O=pcloud/CN=rabbitmq:127.0.0.1" -out $pki/server.csr
        openssl x509 -req -in $pki/server.csr -CA $pki/ca.crt -CAkey $pki/ca.key -days 3650 \
            -set_serial "0x$(openssl rand -hex 16)" -out $pki/server.crt -extfile <(printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost")
    ) 2>/dev/null
    rm -f $pki/server.csr
    chmod 0644 $pki/ca.crt $pki/server.crt
    chmod 0600 $pki/ca.key
    chown root:rabbitmq $pki/server.key
    chmod 0640 $pki/server.key
fi

conf_ok || desired_conf > $conf

# Whatever runs now runs with an older configuration or PKI (or is half up): stop it first.
if answers "$port" || answers "$tls_port" || rabbitmqctl -q status >/dev/null 2>&1; then
    echo "setup-rabbitmq: stopping the running broker to apply the configuration"
    rabbitmqctl -q stop >/dev/null 2>&1 || true
    deadline=$(( $(date +%s) + 60 ))
    while answers "$port" || answers "$tls_port"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "setup-rabbitmq: the old broker still answers after 60 s; stop it by hand" >&2
            exit 1
        fi
        sleep 0.5
    done
fi

mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
chown -R rabbitmq:rabbitmq /var/log/rabbitmq /var/lib/rabbitmq 2>/dev/null || true
# Loopback only: the listeners are in $conf, epmd's address is set above.
export RABBITMQ_DIST_PORT=$((port + 20000))
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
echo "setup-rabbitmq: starting rabbitmq-server"
# The server wrapper drops to the rabbitmq user by itself when started as root. Every
# descriptor above 2 is closed first, so the long-lived broker holds nothing of its caller:
# no pipe of the test command, no lock file (e.g. /tmp/pcloud-qemu.lock under flock).
(
    for fd in "/proc/$BASHPID/fd/"*; do
        fd="${fd##*/}"
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid nohup rabbitmq-server >/var/log/rabbitmq/pcloud-setup.log 2>&1 < /dev/null
) &

deadline=$(( $(date +%s) + 120 ))
until answers "$port" && answers "$tls_port"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "setup-rabbitmq: ports $port and $tls_port did not both answer within 120 s; see /var/log/rabbitmq/pcloud-setup.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "setup-rabbitmq: broker answers on 127.0.0.1:$port and 127.0.0.1:$tls_port (TLS) after $(elapsed) s"
add_users
