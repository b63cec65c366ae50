#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What a VM's modified state is made of.

A thin entry point: the program is qemu_handoff.breakdown.cli
(python/qemu_handoff/breakdown/cli.py).
"""

import sys

from qemu_handoff.breakdown.cli import main

sys.exit(main())
