#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The README's main command: installs what is missing, builds the fork and
# the test guest, then hands a running VM off over an emulated 10 Mbit/s,
# 50 ms WAN link and, for comparison, moves the same VM with stock QEMU
# migration (scripts/demo-handoff.py prints progress and the summary), then
# once more through libvirt: `virsh migrate --handoff` between two libvirt
# hosts of the fork (scripts/demo-libvirt.py).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh
scripts/build-qemu.sh
scripts/build-libvirt.sh
scripts/build-test-guest.sh
/usr/bin/python3 scripts/demo-handoff.py "$@"
# The same move as operators drive it: virsh between two libvirt hosts.
exec /usr/bin/python3 scripts/demo-libvirt.py
