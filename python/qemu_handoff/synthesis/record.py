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

import collections
import hashlib
import lzma
import os
import time

from ..formats import manifest
from ..formats import overlay as overlay_file
from ..formats import working_set
from .client import ask
from .launcher import LaunchedVM

CHUNK = 4096


class RecordError(Exception):
    """A recording that cannot be made as asked."""


class Recording:
    """What a recording saw: chunks touched first, the answer, and the
    seconds from the VM's start to the answer (or the --seconds run)."""

    def __init__(self, pages, disk_chunks, answer, seconds):
        self.kinds = None           # see classify()
        self.pages = pages
        self.disk_chunks = disk_chunks
        self.answer = answer
        self.seconds = seconds

    def summary(self, out):
        mib = self.pages * CHUNK / (1 << 20)
        what = (f"the first request answered in {self.seconds:.1f} s"
                if self.answer is not None else
                f"{self.seconds:.1f} s of running")
        disk_mib = self.disk_chunks * CHUNK / (1 << 20)
        text = (f"{self.pages} pages ({mib:.1f} MiB) of memory and "
                f"{self.disk_chunks} chunks ({disk_mib:.1f} MiB) of disk "
                f"touched first in {what}, in order, written to {out}")
        if self.kinds is not None:
            k = self.kinds
            text += (f"; of pc.ram's {k['pages']}: {k['zero']} zero, "
                     f"{k['base']} in the base, {k['sent']} the cloudlet "
                     f"lacks ({k['sent_lzma6_bytes'] / 1e6:.1f} MB "
                     f"compressed with Python's lzma, preset 6), "
                     f"{k['unread']} in the legacy hole, not sorted")
        return text


def _base_chunks(base):
    """Digests of every chunk of the base's memory and disk: what a
    cloudlet holding it need not receive."""
    m = manifest.read(base)
    known = set()
    for region in m.memory + [m.disk]:
        with open(region.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                for i in range(0, len(block), CHUNK):
                    known.add(hashlib.blake2b(block[i:i + CHUNK],
                                              digest_size=16).digest())
    return m, known


# pc.ram lies at guest-physical 0 up to the first split below 4 GiB
# (q35 splits at 2 GiB from 2.75 GiB of RAM, i440fx at 3 GiB), except the
# legacy VGA and BIOS window, where pmemsave reads devices and ROM.
CLASSIFY_MAX_RAM = 2 << 30
LEGACY_HOLE = range(0xa0000 // CHUNK, 0x100000 // CHUNK)


def classify(ram_dump, base, order):
    """Sorts the pc.ram pages of @order by what a cloudlet holding @base
    would do with them: zero, in the base (anywhere in its memory or
    disk: a reference, as the engine's dedup finds it), or sent (and their
    size compressed with lzma -6). @ram_dump: the VM's RAM as loaded
    (pmemsave from 0; RAM of at most CLASSIFY_MAX_RAM)."""
    m, known = _base_chunks(base)
    ram = m.ram().name
    kinds, sent = collections.Counter(unread=0), []
    with open(ram_dump, "rb") as f:
        for region, chunk, _ in working_set.read(order):
            if region != ram:
                continue
            kinds["pages"] += 1
            if chunk in LEGACY_HOLE:
                kinds["unread"] += 1
                continue
            page = os.pread(f.fileno(), CHUNK, chunk * CHUNK)
            if page == bytes(CHUNK):
                kinds["zero"] += 1
            elif hashlib.blake2b(page, digest_size=16).digest() in known:
                kinds["base"] += 1
            else:
                kinds["sent"] += 1
                sent.append(page)
    kinds["sent_lzma6_bytes"] = len(lzma.compress(b"".join(sent), preset=6))
    return kinds


def record_working_set(overlay, base, out, workdir, forward=None,
                       request=None, seconds=None, qemu=None,
                       classified=False):
    """Launches @overlay on @base, records while it runs, and writes the
    order to @out. With @forward and @request: until the application at
    guest port @forward answered @request; else for @seconds. @classified:
    the RAM as loaded is kept to sort the pages afterwards (classify)."""
    _, description = overlay_file.read_info(overlay)
    ram = description["machine"]["ram-bytes"]
    if classified and ram > CLASSIFY_MAX_RAM:
        raise RecordError(f"--classify reads RAM by guest-physical address, "
                         f"which is pc.ram's offset only up to "
                         f"{CLASSIFY_MAX_RAM >> 30} GiB; this VM has "
                         f"{ram >> 20} MiB")
    # Beside @out: the VM's files go when it stops.
    dump = os.path.abspath(out) + ".loaded.ram"
    vm = LaunchedVM("record", workdir, description, base, qemu=qemu,
                    forwards=[forward] if forward else [],
                    overlay=os.path.abspath(overlay))
    try:
        vm.start()
        try:
            rec = _run_recorded(vm, out, forward, request, seconds,
                                dump if classified else None, ram)
        finally:
            vm.stop(remove_files=True)
        if classified:
            rec.kinds = classify(dump, base, out)
        return rec
    finally:
        if os.path.exists(dump):
            os.unlink(dump)


def _run_recorded(vm, out, forward, request, seconds, dump, ram):
    """Records @vm (started, loading) from its first instruction to the
    answer to @request (or for @seconds); @dump: where its RAM as loaded
    goes first, if anywhere."""
    vm.wait_loaded()
    if dump:
        vm.qmp.cmd("pmemsave", val=0, size=ram, filename=dump)
    vm.qmp.cmd("handoff-record-start", path=os.path.abspath(out))
    t0 = time.monotonic()
    vm.run()
    answer = None
    if request is not None:
        answer = ask("127.0.0.1", vm.ports[forward], request)
    else:
        time.sleep(seconds)
    seconds = time.monotonic() - t0
    info = vm.qmp.cmd("handoff-record-stop")
    return Recording(info["pages"], info["disk-chunks"], answer, seconds)
