#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The racing tests (pytest marker `race`: guest writes, frees, trims and
# balloon hints racing the handoff's rounds; early-started VMs running
# while their segments arrive), each run N times under CPU
# and I/O load, with 1 and then 2 vCPUs (MTTCG runs each vCPU in its own
# thread, outside the BQL). A failure stops the soak and keeps its images
# and logs (the failing test's tmp dir is printed by pytest); pytest's
# output is in build/soak-races/, a file per soak and vCPU count (none is
# overwritten). Outside CI: it takes hours.
#
#   scripts/soak-races.sh                    # 20 runs of each, 1 and 2 vCPUs
#   scripts/soak-races.sh --runs 5 --smp 2 --hogs 3
#   scripts/soak-races.sh --runs 10 -k early_start  # early-start syntheses only
#
# Each run of a test is one handoff, except test_racing_allocations_lose_no_write,
# which makes HANDOFF_RACE_HANDOFFS (3) of them. The summary line counts
# the handoffs that were checked for identity.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
runs=20
smps="1 2"
hogs=$(nproc)
tests=tests/integration
select=()

usage() {
    sed -n '/^# The racing/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --smp) smps=$2; shift 2 ;;
        --hogs) hogs=$2; shift 2 ;;
        -k) select=(-k "$2"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "soak-races: unknown option $1" >&2; usage 2 >&2 ;;
    esac
done

load_dir=$(mktemp -d "${TMPDIR:-/tmp}/soak-races.XXXXXX")
load_pids=()
stop_load() {
    [ ${#load_pids[@]} -eq 0 ] || kill "${load_pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$load_dir"
}
trap stop_load EXIT

# CPU: one busy loop per hog. I/O: 256 MiB written with O_DIRECT and
# fsync'd, again and again, on the disk the tests' images live on.
for _ in $(seq "$hogs"); do
    sh -c 'while :; do :; done' & load_pids+=($!)
done
sh -c "while :; do dd if=/dev/zero of='$load_dir/io' bs=1M count=256 \
        oflag=direct conv=fsync 2>/dev/null; done" & load_pids+=($!)

# A passed test is one move, but a racing-allocations run makes
# HANDOFF_RACE_HANDOFFS (3) of them: the extra moves, once per vCPU count.
extra_per_smp=0
if /usr/bin/python3 -m pytest -q -p no:cacheprovider --collect-only \
        -m race "${select[@]}" "$top/$tests" 2>/dev/null |
        grep -q racing_allocations; then
    extra_per_smp=$(( runs * (${HANDOFF_RACE_HANDOFFS:-3} - 1) ))
fi

start=$(date +%s)
total=0
stamp=$(date -u +%Y%m%dT%H%M%SZ)
for smp in $smps; do
    echo "soak-races: $runs runs of each racing test, $smp vCPU(s), $hogs CPU hogs and an I/O writer"
    mkdir -p "$top/build/soak-races"
    log=$top/build/soak-races/pytest-$stamp-smp$smp.log
    rc=0
    QEMU_HANDOFF_SMP=$smp HANDOFF_SOAK=$runs \
        /usr/bin/python3 -m pytest -x -q -p no:cacheprovider -m race "${select[@]}" \
        "$top/$tests" >"$log" 2>&1 || rc=$?
    tail -n 1 "$log"
    # Counted from pytest's own total, plus the racing-allocations' extra.
    passed=$(tail -n 1 "$log" | grep -o '[0-9]* passed' | cut -d' ' -f1)
    total=$(( total + ${passed:-0} ))
    total=$(( total + extra_per_smp ))
    if [ "$rc" -ne 0 ]; then
        echo "soak-races: FAILED with $smp vCPU(s) after $(( $(date +%s) - start )) s" >&2
        grep -E 'RAM differs|lost|Error|assert' "$log" | head -n 40 >&2
        echo "soak-races: whole log: $log" >&2
        exit 1
    fi
done
echo "soak-races: $total moves (handoffs, early-started syntheses), 0 differences, in $(( $(date +%s) - start )) s"
