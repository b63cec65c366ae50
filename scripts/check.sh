#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The README's test command: installs what is missing, builds the fork,
# its libvirt, the test guest and the edge guest, then runs every test:
# CUnit unit tests through meson, a bounded libFuzzer run of the fuzz
# targets, then the integration tests that boot real guests in real QEMU
# processes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
results=$top/build/test-results
start=$(date +%s)
# Each step also prints the free disk space: a full run needs a few GiB
# (built trees, test guests, the bases tests make), and a disk that fills
# shows up as unrelated-looking test errors.
step() {
    printf '\n=== check: %s (%d s, %s free)\n' "$*" \
        "$(( $(date +%s) - start ))" "$(df -h --output=avail . | tail -1 | tr -d ' ')"
}

step "dependencies"
scripts/install-deps.sh
step "build"
scripts/build-qemu.sh
step "libvirt"
scripts/build-libvirt.sh
step "test guest"
scripts/build-test-guest.sh
# The OCR application VM of the synthesis test boots the edge guest.
step "edge guest"
scripts/build-edge-guest.sh

rm -rf "$results" && mkdir -p "$results"
status=0

step "docs (documented files exist, documented scripts run)"
/usr/bin/python3 scripts/check-docs.py || status=1

step "unit tests"
meson test -C build/handoff --print-errorlogs --verbose || status=1
cp build/handoff/meson-logs/testlog.junit.xml "$results/unit.xml" 2>/dev/null || true

step "fuzzing (bounded)"
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-30}" --no-corpus-update || status=1

step "Python unit and property tests"
/usr/bin/python3 -m pytest -v -p no:cacheprovider \
    --junitxml="$results/python.xml" tests/python || status=1

step "integration tests"
/usr/bin/python3 -m pytest -v -p no:cacheprovider \
    --junitxml="$results/integration.xml" tests/integration || status=1

step "summary"
/usr/bin/python3 - "$results" <<'PY'
import glob, sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for s in suites:
        n = int(s.get("tests", 0))
        f = int(s.get("failures", 0)) + int(s.get("errors", 0))
        k = int(s.get("skipped", 0))
        passed += n - f - k; failed += f; skipped += k
print(f"check: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
