#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fuzzes the engine's stream decoder with libFuzzer (clang, ASan + UBSan)
# for a bounded time, starting from seed streams the engine writes itself.
# Exits non-zero on any crash, leak, sanitizer report or timeout found.
#
# Usage: scripts/fuzz-decoder.sh [SECONDS]      (default 60)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
build=$top/build/fuzz
corpus=$build/corpus

command -v clang++ >/dev/null || { echo "fuzz-decoder: clang++ missing" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
    CC=clang CXX=clang++ meson setup "$build" "$top" \
        -Db_sanitize=address,undefined -Db_lundef=false \
        -Dcpp_args=-fsanitize=fuzzer-no-link >"$build.log" 2>&1 ||
        { tail -n 20 "$build.log" >&2; exit 1; }
fi
ninja -C "$build" migration-handoff/decoder-fuzzer \
    migration-handoff/decoder-fuzz-smoke >/dev/null
mkdir -p "$corpus"
"$build/migration-handoff/decoder-fuzz-smoke" --write-seeds "$corpus" >/dev/null
echo "fuzz-decoder: $seconds s of libFuzzer on the decoder ($(ls "$corpus" | wc -l) inputs in the corpus)" >&2
cd "$build"
"$build/migration-handoff/decoder-fuzzer" -max_total_time="$seconds" \
    -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 "$corpus" 2>"$build/fuzz.log" ||
    { tail -n 40 "$build/fuzz.log" >&2; echo "fuzz-decoder: FAILED" >&2; exit 1; }
grep -E "^stat::number_of_executed_units|^Done" "$build/fuzz.log" >&2 || true
echo "fuzz-decoder: no failure found" >&2
