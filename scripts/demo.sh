#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The README's main command: installs what is missing, builds the fork and
# the test guest, then runs the demo (scripts/demo.py).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh
scripts/build-qemu.sh
scripts/build-test-guest.sh
exec /usr/bin/python3 scripts/demo.py "$@"
