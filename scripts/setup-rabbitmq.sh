#!/usr/bin/env bash
# Opt-in: makes a RabbitMQ 3.10 broker with the AMQP 1.0 plugin answer on 127.0.0.1:5672, so
# tests/bus can prove pcloud's bus client works against an external broker as well as against
# the embedded hub. It installs rabbitmq-server only when PCLOUD_TEST_RABBITMQ=1; if the
# package is already installed it (re)starts the broker; otherwise it does nothing, and the
# RabbitMQ test SKIPs with a reason. Idempotent: safe to run on every test run.
#
# No systemd here (see shared/ENVIRONMENT.md): the broker is started in the background by hand.
# Its log goes to /var/log/rabbitmq/pcloud-setup.log.
set -euo pipefail

want="${PCLOUD_TEST_RABBITMQ:-0}"
# Not 5672: that is the embedded hub's default, and the demo must be able to use it.
port="${PCLOUD_RABBITMQ_PORT:-5682}"
t0=$(date +%s.%N)

installed() { dpkg-query -W -f='${Status}' rabbitmq-server 2>/dev/null | grep -q "install ok installed"; }
answers() { (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

if ! installed; then
    if [ "$want" != "1" ]; then
        echo "setup-rabbitmq: not installed and PCLOUD_TEST_RABBITMQ!=1; skipping (RabbitMQ tests will SKIP)"
        exit 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-rabbitmq: rabbitmq-server missing; run as root to install it" >&2
        exit 1
    fi
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

# Enabling a plugin offline only edits /etc/rabbitmq/enabled_plugins: cheap and idempotent.
if ! grep -q rabbitmq_amqp1_0 /etc/rabbitmq/enabled_plugins 2>/dev/null; then
    rabbitmq-plugins --offline enable rabbitmq_amqp1_0 >/dev/null
fi

if answers; then
    echo "setup-rabbitmq: port $port already answers"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-rabbitmq: broker not running; run as root to start it" >&2
    exit 1
fi
mkdir -p /var/log/rabbitmq /var/lib/rabbitmq
chown -R rabbitmq:rabbitmq /var/log/rabbitmq /var/lib/rabbitmq 2>/dev/null || true
# Loopback only: the tests never talk to anything else.
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$port"
export RABBITMQ_DIST_PORT=$((port + 20000))
echo "setup-rabbitmq: starting rabbitmq-server"
# The server wrapper drops to the rabbitmq user by itself when started as root.
setsid nohup rabbitmq-server >/var/log/rabbitmq/pcloud-setup.log 2>&1 < /dev/null &

deadline=$(( $(date +%s) + 120 ))
until answers; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "setup-rabbitmq: port $port did not answer within 120 s; see /var/log/rabbitmq/pcloud-setup.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "setup-rabbitmq: broker answers on 127.0.0.1:$port after $(elapsed) s"
