#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Fuzzes with libFuzzer (clang, ASan + UBSan): the engine's stream
# decoder (version 2, and segmented streams), base index parser and
# `qemu-handoff inspect` (targets in
# migration-handoff/fuzz/, docs/handoff-engine.md "Fuzzing"), and QEMU's
# base manifest parser (qemu/fuzz/fuzz-manifest.c, built against the
# configured QEMU tree of scripts/build-qemu.sh and its libqemuutil). The targets
# run one after the other, each for its share of the time, starting from
# its corpus in the repository (migration-handoff/fuzz/corpus/TARGET). For
# each it prints executions, coverage and corpus size. Exits non-zero on
# any crash, leak, sanitizer report, out-of-memory or input slower than
# 10 s, naming the reproducer.
#
# Usage: scripts/fuzz.sh [--minutes N | --seconds N] [--target NAME|all]
#                        [--parallel] [--no-corpus-update]
#   Default: 60 seconds over all targets, one after the other, each for its
#   share; --parallel runs every target for the whole time at once (one
#   process each: all cores busy, for long runs). Afterwards the repository's
#   corpus of each target is minimised (-merge=1) together with what the
#   run found and written back, within a size budget; --no-corpus-update
#   (CI) leaves the tree as it was. FUZZ_JOBS sets ninja's parallelism.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build/fuzz
corpora=$top/migration-handoff/fuzz/corpus
qemu_build=$top/build/qemu
all_targets="decoder index inspect segments manifest load"
qemu_targets=" manifest load "
# Shares of the time: the decoder's inputs cost the most to run and reach
# the most code.
declare -A weight=([decoder]=2 [index]=1 [inspect]=1 [segments]=1 [manifest]=1 [load]=1)
is_qemu_target() { [[ "$qemu_targets" == *" $1 "* ]]; }
corpus_of() {
    if is_qemu_target "$1"; then echo "$top/qemu/fuzz/corpus/$1"
    else echo "$corpora/$1"; fi
}
bin_of() {
    if is_qemu_target "$1"; then echo "$build/qemu-fuzz/$1-fuzzer"
    else echo "$build/migration-handoff/$1-fuzzer"; fi
}
# Committed corpus per target, at most (the repository holds it).
budget_kib=500

seconds=60 target=all update=1 parallel=0
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) seconds=$(( $2 * 60 )); shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --target) target=$2; shift 2 ;;
        --no-corpus-update) update=0; shift ;;
        --parallel) parallel=1; shift ;;
        -h|--help) sed -n '3,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fuzz: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$target" = all ]; then
    targets=$all_targets
elif [[ " $all_targets " == *" $target "* ]]; then
    targets=$target
else
    echo "fuzz: no target '$target' (targets: $all_targets)" >&2; exit 2
fi

command -v clang++ >/dev/null || { echo "fuzz: clang++ missing" >&2; exit 1; }
if [ ! -f "$build/build.ninja" ]; then
    CC=clang CXX=clang++ meson setup "$build" "$top" \
        -Db_sanitize=address,undefined -Db_lundef=false \
        -Dcpp_args=-fsanitize=fuzzer-no-link >"$build.log" 2>&1 ||
        { tail -n 20 "$build.log" >&2; exit 1; }
fi
ninja_targets=()
for t in $targets; do
    if is_qemu_target "$t"; then
        ninja_targets+=("migration-handoff/libhandoff.a")
    else
        ninja_targets+=("migration-handoff/$t-fuzzer" "migration-handoff/$t-fuzz-smoke")
    fi
done
ninja -C "$build" -j"${FUZZ_JOBS:-$(nproc)}" "${ninja_targets[@]}" >"$build/ninja.log" 2>&1 ||
    { tail -n 30 "$build/ninja.log" >&2; exit 1; }

# The QEMU-side targets (qemu/fuzz/): a harness and our QEMU files it
# drives, compiled with the configured QEMU tree's include paths and
# defines, linked with its libqemuutil (QObject, JSON, Error, tracing) and
# the instrumented engine. $1: target; $2: the QEMU file whose compile
# flags they take (target-specific or not); then the sources (absolute).
build_qemu_fuzzer() {
    local t=$1 like=$2 out=$build/qemu-fuzz flags=() objs=() src engine_deps
    local san=(-fsanitize=address,undefined -g -O1)
    shift 2
    [ -f "$qemu_build/libqemuutil.a" ] ||
        { echo "fuzz: $t: no QEMU build (run scripts/build-qemu.sh)" >&2; return 1; }
    mkdir -p "$out"
    mapfile -t flags < <(/usr/bin/python3 - "$qemu_build/compile_commands.json" "$like" <<'PY'
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].endswith("migration/" + sys.argv[2]):
        args, keep, i = shlex.split(e["command"]), [], 0
        while i < len(args):
            a = args[i]
            if a in ("-iquote", "-isystem", "-I", "-D") and i + 1 < len(args):
                keep += [a, args[i + 1]]
                i += 2
                continue
            if a.startswith(("-I", "-D", "-isystem", "-std=")) or a in ("-m64", "-pthread"):
                keep.append(a)
            i += 1
        print("\n".join(keep))
        break
PY
)
    [ "${#flags[@]}" -gt 0 ] || { echo "fuzz: $t: QEMU tree has no handoff glue" >&2; return 1; }
    for src in "$@"; do
        objs+=("$out/$t-$(basename "$src" .c).o")
        (cd "$qemu_build" &&
         clang "${san[@]}" -fsanitize=fuzzer-no-link "${flags[@]}" \
             -Wno-unknown-warning-option -iquote "$top/qemu/overlay/migration" \
             -iquote "$top/build/src/qemu/migration" \
             -c "$src" -o "${objs[-1]}") >>"$out/build-$t.log" 2>&1 ||
            { tail -n 30 "$out/build-$t.log" >&2; return 1; }
    done
    # The engine's own dependencies, from its one list (handoff.pc's
    # Requires): a library it gains (GnuTLS, for SHA-256) links here too.
    engine_deps=$(sed -n 's/^Requires: //p' "$build/migration-handoff/handoff.pc")
    # shellcheck disable=SC2046,SC2086
    clang++ "${san[@]}" -fsanitize=fuzzer "${objs[@]}" \
        -Wl,--start-group "$qemu_build/libqemuutil.a" "$qemu_build/libqom.fa" \
        -Wl,--end-group \
        "$build/migration-handoff/libhandoff.a" \
        $(pkg-config --libs glib-2.0 $engine_deps) -lm \
        -o "$out/$t-fuzzer" >>"$out/build-$t.log" 2>&1 ||
        { tail -n 30 "$out/build-$t.log" >&2; return 1; }
}
if [[ " $targets " == *" manifest "* ]]; then
    rm -f "$build/qemu-fuzz/build-manifest.log"
    build_qemu_fuzzer manifest handoff-params.c "$top/qemu/fuzz/fuzz-manifest.c" \
        "$top/qemu/overlay/migration/handoff-manifest.c" || exit 1
fi
if [[ " $targets " == *" load "* ]]; then
    rm -f "$build/qemu-fuzz/build-load.log"
    build_qemu_fuzzer load handoff-load.c "$top/qemu/fuzz/fuzz-load.c" \
        "$qemu_build/trace/trace-migration.c" || exit 1
fi

# UBSan reports are findings: stop at the first. A smaller ASan quarantine
# than the default 256 MiB keeps freed memory in use instead of mapping
# fresh pages for every allocation, which on virtual machines cost more
# than the targets themselves; use-after-free is still caught within the
# last 32 MiB freed.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=32
# -len_control: the custom mutators turn libFuzzer's length control off
# by default, letting inputs grow towards -max_len and every execution
# slow down with them; on, lengths grow only when coverage stalls.
fuzz_flags=(-timeout=10 -max_len=1048576 -rss_limit_mb=2048 -len_control=20
            -print_final_stats=1)

total_weight=0
for t in $targets; do total_weight=$(( total_weight + weight[$t] )); done
kib() { du -s --apparent-size --block-size=1K "$1" | cut -f1; }
# libFuzzer names the inputs it keeps by their SHA-1.
hashed() { find "$1" -regextype posix-extended -type f -regex '.*/[0-9a-f]{40}' "${@:2}"; }
status=0 total_execs=0 start=$(date +%s)

# Replaces the repository's corpus of target $1 by a minimal set covering
# it and the run's finds: named inputs (seeds, past findings) stay, the
# others are libFuzzer's, named by their SHA-1; the largest of those go
# when the set exceeds the budget.
update_corpus() {
    local t=$1 bin=$2 work=$3 repo merged kept f name
    repo=$(corpus_of "$t")
    merged=$(mktemp -d "$build/merge-$t.XXXXXX")
    if ! (cd "$build" && "$bin" -merge=1 "${fuzz_flags[@]}" "$merged" "$repo" "$work") \
            >"$build/merge-$t.log" 2>&1; then
        echo "fuzz: $t: merge failed, corpus unchanged (see $build/merge-$t.log)" >&2
        rm -rf "$merged"; return 1
    fi
    kept=$(find "$repo" -regextype posix-extended -type f \
               ! -regex '.*/[0-9a-f]{40}' -exec sha1sum {} + | cut -d' ' -f1)
    hashed "$repo" -delete
    for f in "$merged"/*; do
        name=$(basename "$f")
        grep -qx "$name" <<<"$kept" || cp "$f" "$repo/$name"
    done
    rm -rf "$merged"
    while [ "$(kib "$repo")" -gt "$budget_kib" ]; do
        f=$(hashed "$repo" -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
        [ -n "$f" ] || break
        rm -f "$f"
    done
}

# Fuzzes target $1 for $2 seconds; its execution count goes to
# $build/execs-$1. Returns non-zero on a finding.
run_target() {
    local t=$1 share=$2 bin repo work artifacts log t0 rc wall execs cov repro
    bin=$(bin_of "$t")
    repo=$(corpus_of "$t") work=$build/corpus/$t artifacts=$build/artifacts/$t/
    log=$build/fuzz-$t.log
    mkdir -p "$repo" "$artifacts"
    rm -rf "$work" && mkdir -p "$work"
    if [ -z "$(ls -A "$repo")" ]; then
        if is_qemu_target "$t"; then
            HANDOFF_FUZZ_WRITE_SEEDS=$repo "$bin"
        else
            "$build/migration-handoff/$t-fuzz-smoke" --write-seeds "$repo"
        fi
    fi
    echo "fuzz: $t: $share s from $(ls "$repo" | wc -l) inputs ($(kib "$repo") KiB)" >&2
    t0=$(date +%s)
    rc=0
    (cd "$build" && "$bin" -max_total_time="$share" "${fuzz_flags[@]}" \
        -artifact_prefix="$artifacts" "$work" "$repo") >"$log" 2>&1 || rc=$?
    wall=$(( $(date +%s) - t0 ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    echo "${execs:-0}" >"$build/execs-$t"
    cov=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n 1 |
          sed -E 's/.* cov: ([0-9]+) ft: ([0-9]+).*/cov \1, ft \2/')
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log" >&2
        repro=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
        echo "fuzz: $t: FAILED (exit $rc) after ${execs:-0} executions; reproducer: ${repro:-none written}" >&2
        echo "fuzz: $t: replay with $(is_qemu_target "$t" && echo "$bin" ||
            echo "$build/migration-handoff/$t-fuzz-smoke") ${repro:-FILE} (full log $log)" >&2
        return 1
    fi
    rc=0
    [ "$update" -eq 0 ] || update_corpus "$t" "$bin" "$work" || rc=1
    echo "fuzz: $t: ${execs:-0} executions in $wall s ($(( ${execs:-0} / (wall > 0 ? wall : 1) ))/s), ${cov:-no coverage line}," \
         "corpus $(ls "$repo" | wc -l) inputs ($(kib "$repo") KiB)" \
         "+ $(ls "$work" | wc -l) found this run" >&2
    return $rc
}

rm -f "$build"/execs-*
if [ "$parallel" -eq 1 ]; then
    # Every target for the whole time, side by side: the kernel shares
    # the cores among them.
    pids=()
    for t in $targets; do
        run_target "$t" "$seconds" & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else
    for t in $targets; do
        share=$(( seconds * weight[$t] / total_weight ))
        [ "$share" -ge 1 ] || share=1
        run_target "$t" "$share" || status=1
    done
fi
for t in $targets; do
    total_execs=$(( total_execs + $(cat "$build/execs-$t" 2>/dev/null || echo 0) ))
done
echo "fuzz: $total_execs executions in total, $(( $(date +%s) - start )) s;" \
     "$([ $status -eq 0 ] && echo 'no failure found' || echo FAILED)" >&2
exit $status
