#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What discarded blocks cost a handoff.

A thin entry point: the program is qemu_handoff.bench.trim
(python/qemu_handoff/bench/trim.py).
"""

import sys

from qemu_handoff.bench.trim import main

sys.exit(main())
