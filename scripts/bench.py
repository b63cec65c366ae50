#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmark matrix, handoff versus stock QEMU migration.

A thin entry point: the program is qemu_handoff.bench.matrix
(python/qemu_handoff/bench/matrix.py).
"""

import sys

from qemu_handoff.bench.matrix import main

sys.exit(main())
