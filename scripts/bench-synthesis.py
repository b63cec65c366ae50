#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Time to first response of synthesized VMs.

A thin entry point: the program is qemu_handoff.bench.synthesis
(python/qemu_handoff/bench/synthesis.py).
"""

import sys

from qemu_handoff.bench.synthesis import main

sys.exit(main())
