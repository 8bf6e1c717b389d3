#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, `cmake --preset fuzz`: clang 14, ASan+UBSan) in
# build-fuzz and runs each on a temporary copy of its seed corpus tests/fuzz/corpus/<target>,
# so a run never grows the checked-in corpus. See docs/security.md "Fuzzing".
#   scripts/fuzz.sh [SECONDS] [TARGET...]          each target for SECONDS (default 30)
#   scripts/fuzz.sh --runs N [TARGET...]           each target for N executions instead
# Fails (exit 1) on any crash, timeout, leak or out-of-memory, printing the input that
# caused it (kept under build-fuzz/artifacts/<target>/) and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

runs=""
if [ "${1:-}" = "--runs" ]; then
    runs=${2:?--runs needs a number}
    shift 2
fi
seconds=30
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
all=(fuzz_store_xml fuzz_agent_proto fuzz_command_api fuzz_journal_line fuzz_shell_cli fuzz_scenario
     fuzz_envelope)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
    [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz: unknown target $t (have: ${all[*]})" >&2; exit 2; }
done

command -v clang++-14 >/dev/null ||
    { echo "fuzz: clang++-14 is not installed (run scripts/install-deps.sh)" >&2; exit 1; }
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake --preset fuzz "${launcher[@]}" >/dev/null
cmake --build --preset fuzz -- --no-print-directory >/dev/null ||
    { echo "fuzz: the build failed; run: cmake --build --preset fuzz" >&2; exit 1; }

work=$(mktemp -d /tmp/pcloud-fuzz-XXXXXX)
trap 'rm -rf "$work"' EXIT
failed=0
for t in "${targets[@]}"; do
    bin="$root/build-fuzz/bin/$t"
    artifacts="$root/build-fuzz/artifacts/$t"
    mkdir -p "$work/$t" "$artifacts"
    cp tests/fuzz/corpus/"$t"/* "$work/$t/"
    limit=(-max_total_time="$seconds")
    [ -n "$runs" ] && limit=(-runs="$runs")
    log="$work/$t.log"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb bounds a runaway allocation.
    set +e
    "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$work/$t" >"$log" 2>&1
    rc=$?
    set -e
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/cov=\1 ft=\2 corpus=\3/p' <<<"$last")
    if [ $rc -ne 0 ]; then
        failed=1
        echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} executions" >&2
        grep -E 'ERROR: |SUMMARY: |^[a-z].*: .*(does not|internal error)' "$log" | head -5 >&2 || true
        crash=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //')
        if [ -n "$crash" ]; then
            echo "fuzz: input: $crash" >&2
            echo "fuzz: replay: $bin $crash" >&2
        fi
        cp "$log" "$artifacts/last.log"
        echo "fuzz: full log: $artifacts/last.log" >&2
    else
        echo "fuzz: $t ok: execs=${execs:-?} exec/s=${rate:-?} $cov"
    fi
done
exit $failed
