#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The benchmarks in one command: installs what is missing, builds the fork,
# the test guest and (unless --quick) the edge guest, then runs the matrix
# (scripts/bench.py; its --help lists the options). `--quick` is the CI
# smoke run: the CI-size guest at one bandwidth, a few minutes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
scripts/install-deps.sh
scripts/build-qemu.sh
scripts/build-test-guest.sh
case " $* " in
*" --quick "*|*" --report-only "*) ;;
*) scripts/build-edge-guest.sh ;;
esac
exec /usr/bin/python3 scripts/bench.py "$@"
