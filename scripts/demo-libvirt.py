#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Virsh migrate --handoff between two libvirt hosts.

A thin entry point: the program is qemu_handoff.demo.libvirt
(python/qemu_handoff/demo/libvirt.py).
"""

import sys

from qemu_handoff.demo.libvirt import main

sys.exit(main())
