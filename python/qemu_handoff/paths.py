# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the checkout and its build are.

TOP is found from this file's real path, so that the package gives the
same answer whether it is imported from python/ (tests, through
pytest.ini) or through the scripts/qemu_handoff link (scripts).
QEMU_HANDOFF_BUILD points the tests and scripts at another build tree
(a fresh clone's, say).
"""

import os

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__))))
BUILD = os.environ.get("QEMU_HANDOFF_BUILD", os.path.join(TOP, "build"))
# Debian's firmware packages (seabios, ipxe-qemu) and QEMU's own ROMs: a
# QEMU run from the build tree is pointed at them with -L.
FIRMWARE_DIRS = ("/usr/share/seabios", "/usr/lib/ipxe/qemu",
                 "/usr/share/qemu")
