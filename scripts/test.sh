#!/usr/bin/env bash
# The README test command: installs what the tests need, starts the real daemons they
# drive, builds, and runs the whole suite. Safe to run again; needs root on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Formatting first: a few seconds, and it fails before a long build would.
bash scripts/check-format.sh
# The external-broker test runs for real in CI (RabbitMQ on 127.0.0.1:5682).
export PCLOUD_TEST_RABBITMQ=1
for setup in scripts/setup-*.sh; do
    [ -e "$setup" ] && bash "$setup"
done
# Tests ON explicitly: scripts/demo.sh configures the same build dir with them off.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPCLOUD_BUILD_TESTS=ON >/dev/null
cmake --build build -j2
ctest --test-dir build --output-on-failure

# pcloud-cts short run (docs/cts.md): 30 randomized faults of the guests and of pcloud itself
# against a live cped, real QEMU guests and HAProxy under load, each followed by its audits.
# A fixed seed, so a failure here replays exactly: bench/cts/run.sh 30 SEED.
MAX_STOP_MS=3000 bash bench/cts/run.sh 30 "${PCLOUD_CTS_SEED:-20261201}"

# The pure parts (common, store, policy engine and its golden cases) again under
# AddressSanitizer + UndefinedBehaviorSanitizer.
cmake --preset asan >/dev/null
cmake --build --preset asan --target common_test store_test policy_test policy_golden pcloud-simulate
ctest --preset asan -R '^(policy\.|Store|Templates|TimeFormat|Fs\.)'

# Fuzzing (docs/security.md "Fuzzing"): each libFuzzer target for 30 s on a copy of its seed
# corpus, clang 14 with ASan+UBSan in build-fuzz. Fails on any crash, naming the input.
bash scripts/fuzz.sh 30
