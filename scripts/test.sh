#!/usr/bin/env bash
# The README test command: installs what the tests need, starts the real daemons they
# drive, builds, and runs the whole suite. Safe to run again; needs root on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2
ctest --test-dir build --output-on-failure
