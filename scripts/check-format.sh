#!/usr/bin/env bash
# Checks every tracked C++ file against .clang-format; the test command runs it first, so
# an unformatted change fails CI in seconds rather than after the build.
#   scripts/check-format.sh          list the files that differ, exit 1 if any
#   scripts/check-format.sh --fix    format them in place
# Uses clang-format 14, Debian 12's (scripts/install-deps.sh): other versions format a few
# constructs differently, so format with this one.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null ||
    { echo "check-format: clang-format is not installed (run scripts/install-deps.sh)" >&2; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.cc' '*.h')
else
    mapfile -t files < <(find . -path ./build -prune -o -path './build-*' -prune -o \
        \( -name '*.cc' -o -name '*.h' \) -print | sed 's|^\./||' | sort)
fi
if [ "${1:-}" = "--fix" ]; then
    clang-format -i "${files[@]}"
    echo "check-format: formatted ${#files[@]} files"
    exit 0
fi
bad=()
for f in "${files[@]}"; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
    echo "check-format: ${#bad[@]} of ${#files[@]} files differ from .clang-format:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "check-format: run scripts/check-format.sh --fix (clang-format $(clang-format --version | grep -o '[0-9][0-9.]*' | head -1))" >&2
    exit 1
fi
echo "check-format: ${#files[@]} files match .clang-format"
