#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""What TLS costs a handoff.

A thin entry point: the program is qemu_handoff.bench.tls
(python/qemu_handoff/bench/tls.py).
"""

import sys

from qemu_handoff.bench.tls import main

sys.exit(main())
