#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What the guest agent costs the guest.

A thin entry point: the program is qemu_handoff.bench.agent_cpu
(python/qemu_handoff/bench/agent_cpu.py).
"""

import sys

from qemu_handoff.bench.agent_cpu import main

sys.exit(main())
