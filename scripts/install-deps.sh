#!/usr/bin/env bash
# Installs every Debian 12 package pcloud needs to build, test and run its demo.
# Idempotent: packages already present are skipped by apt; safe to run on every CI run.
set -euo pipefail

BUILD_PKGS=(
    cmake g++ make pkg-config git
    libvirt-dev libqpid-proton-cpp12-dev libqpid-proton11-dev libpugixml-dev libsdbus-c++-dev
    libboost-dev libgtest-dev libgmock-dev nlohmann-json3-dev libreadline-dev clang-format
    clang-14 libclang-rt-14-dev libssl-dev libnl-route-3-dev
    libgrpc++-dev protobuf-compiler protobuf-compiler-grpc golang-etcd-server-dev
)
# The real parts the integration tests and the demo drive.
RUNTIME_PKGS=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
    busybox-static cpio xz-utils
    haproxy apache2 nginx debootstrap systemd-container
    tmux python3-qpid-proton procps iproute2 curl openssl
    etcd-server etcd-client
)

need=()
for p in "${BUILD_PKGS[@]}" "${RUNTIME_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${need[*]}); run as root" >&2
    exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps package scripts from trying to start daemons (no systemd here).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-deps: done"
