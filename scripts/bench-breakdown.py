#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The edge VMs' modified state by what it is.

A thin entry point: the program is qemu_handoff.bench.breakdown
(python/qemu_handoff/bench/breakdown.py).
"""

import sys

from qemu_handoff.bench.breakdown import main

sys.exit(main())
