#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Handoff versus stock migration of one VM.

A thin entry point: the program is qemu_handoff.demo.handoff
(python/qemu_handoff/demo/handoff.py).
"""

import sys

from qemu_handoff.demo.handoff import main

sys.exit(main())
