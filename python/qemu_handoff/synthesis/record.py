# SPDX-License-Identifier: GPL-2.0-or-later
"""Recording a VM's working set: which pages it touches first, in order.

The VM is launched from its overlay here, paused; QEMU is told to record
(QMP handoff-record-start), the VM runs and is sent its application's first
request through a forwarded port, and the recording stops once the answer
is in: QEMU writes the order (docs/overlay-format.md, "Working-set
order"). An early-start overlay sends those pages first.

QEMU runs as this process's user, unconfined: userfaultfd, which records
every first touch, needs root (or sysctl vm.unprivileged_userfaultfd=1),
and this is an owner recording their own VM, not a cloudlet serving
strangers.
"""

import os
import time

from ..formats import overlay as overlay_file
from .client import ask
from .launcher import LaunchedVM


class Recording:
    """What a recording saw: pages touched first, the answer and times."""

    def __init__(self, pages, refaults, answer, request_s, total_s):
        self.pages = pages
        self.refaults = refaults
        self.answer = answer
        self.request_s = request_s
        self.total_s = total_s

    def summary(self, out):
        mib = self.pages * 4096 / (1 << 20)
        what = (f"the first request answered in {self.request_s:.1f} s"
                if self.answer is not None else
                f"{self.total_s:.1f} s of running")
        return (f"{self.pages} pages ({mib:.1f} MiB) touched first in "
                f"{what}, in order, written to {out}")


def record_working_set(overlay, base, out, workdir, forward=None,
                       request=None, seconds=None, qemu=None):
    """Launches @overlay on @base, records while it runs, and writes the
    order to @out. With @forward and @request: until the application at
    guest port @forward answered @request; else for @seconds."""
    _, description = overlay_file.read_info(overlay)
    vm = LaunchedVM("record", workdir, description, base, qemu=qemu,
                    forwards=[forward] if forward else [],
                    overlay=os.path.abspath(overlay))
    vm.start()
    try:
        vm.wait_loaded()
        vm.qmp.cmd("handoff-record-start", path=os.path.abspath(out))
        t0 = time.monotonic()
        vm.run()
        answer = None
        if request is not None:
            answer = ask("127.0.0.1", vm.ports[forward], request)
        else:
            time.sleep(seconds)
        request_s = time.monotonic() - t0
        info = vm.qmp.cmd("handoff-record-stop")
        return Recording(info["pages"], info["refaults"], answer,
                         request_s, time.monotonic() - t0)
    finally:
        vm.stop(remove_files=True)
