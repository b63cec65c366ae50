# SPDX-License-Identifier: GPL-2.0-or-later
"""The QMP client tests use: the synthesis service's (scripts/synthesis/qmp.py),
so that there is one."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "scripts"))

from synthesis.qmp import QMPClient, QMPError, end_qemu  # noqa: E402

__all__ = ["QMPClient", "QMPError", "end_qemu"]
