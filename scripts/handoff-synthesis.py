#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""VM overlays turned into running VMs at a cloudlet.

A thin entry point: the program is qemu_handoff.synthesis.cli
(python/qemu_handoff/synthesis/cli.py).
"""

import sys

from qemu_handoff.synthesis.cli import main

sys.exit(main())
