#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What free guest memory costs a move.

A thin entry point: the program is qemu_handoff.bench.free_memory
(python/qemu_handoff/bench/free_memory.py).
"""

import sys

from qemu_handoff.bench.free_memory import main

sys.exit(main())
