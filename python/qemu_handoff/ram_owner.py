# SPDX-License-Identifier: GPL-2.0-or-later
"""Who holds a guest-physical address: what identity.py names beside a RAM
difference, so that the next lost write explains itself.

Two owners can be told from the host:
- a virtqueue of a device (QMP x-query-virtio-queue-status: its
  descriptor table, available and used rings, down to the field, such as
  the used ring's avail_event that virtio-balloon's iothread wrote into a
  stopped VM), and the buffers its descriptors point to (read from a RAM
  dump: a virtio-serial control message lands in one);
- what the guest keeps in the page (the guest agent's page classes: page
  cache, anonymous, kernel, free), asked of a running VM with the agent.
"""

import struct
import time

from .formats.agent_protocol import PAGE_CLASSES
from .qmp import QMPError

PAGE = 4096
DESC_SIZE = 16      # struct vring_desc: addr, len, flags, next
VRING_DESC_F_INDIRECT = 4
MAX_QUEUES = 1024   # VIRTIO_QUEUE_MAX


def _ring_fields(name, q):
    """(start, end, label) of the split ring's parts of queue @q."""
    num = q["vring-num"]
    desc, avail, used = q["vring-desc"], q["vring-avail"], q["vring-used"]
    where = f"{name} queue {q['queue-index']}"
    return [
        (desc, desc + DESC_SIZE * num, f"{where}: descriptor table"),
        (avail, avail + 4, f"{where}: available ring flags/idx"),
        (avail + 4, avail + 4 + 2 * num, f"{where}: available ring entries"),
        (avail + 4 + 2 * num, avail + 6 + 2 * num,
         f"{where}: available ring used_event"),
        (used, used + 4, f"{where}: used ring flags/idx"),
        (used + 4, used + 4 + 8 * num, f"{where}: used ring entries"),
        (used + 4 + 8 * num, used + 6 + 8 * num,
         f"{where}: used ring avail_event"),
    ]


def _buffers(name, q, dump):
    """(start, end, label) of the buffers queue @q's descriptors point to,
    read from @dump (an open RAM dump from guest-physical 0)."""
    areas = []
    dump.seek(q["vring-desc"])
    table = dump.read(DESC_SIZE * q["vring-num"])
    for i in range(len(table) // DESC_SIZE):
        addr, length, flags, _ = struct.unpack_from("<QIHH", table,
                                                    i * DESC_SIZE)
        if length:
            kind = "indirect table" if flags & VRING_DESC_F_INDIRECT \
                else "buffer"
            areas.append((addr, addr + length,
                          f"{name} queue {q['queue-index']}: {kind} of "
                          f"descriptor {i}"))
    return areas


def virtqueue_areas(qmp, dump_path=None):
    """Every virtqueue's rings, and with @dump_path (that VM's RAM dump)
    the buffers they point to: [(start, end, label)]. Empty when QEMU
    cannot tell (an older QEMU, no virtio device)."""
    areas = []
    try:
        devices = qmp.cmd("x-query-virtio")
    except QMPError:
        return areas
    dump = open(dump_path, "rb") if dump_path else None
    try:
        for dev in devices:
            name = f"{dev['name']} ({dev['path']})"
            for index in range(MAX_QUEUES):
                try:
                    q = qmp.cmd("x-query-virtio-queue-status",
                                path=dev["path"], queue=index)
                except QMPError:
                    break
                if not q["vring-desc"] or not q["vring-num"]:
                    continue            # a queue the guest never set up
                areas += _ring_fields(name, q)
                if dump:
                    areas += _buffers(name, q, dump)
    finally:
        if dump:
            dump.close()
    return areas


def page_classes(qmp, path, timeout=30):
    """The guest agent's map of @qmp's VM (running, with the agent), one
    byte per page frame, or None when it cannot answer."""
    try:
        qmp.cmd("handoff-agent-page-classes", path=path)
        event = qmp.wait_event("HANDOFF_AGENT_PAGE_CLASSES", timeout,
                               lambda d: d.get("path") == path)
    except (QMPError, TimeoutError):
        return None
    if "error" in event:
        return None
    with open(path, "rb") as f:
        return f.read()


class Owners:
    """Names the owners of guest-physical addresses: virtqueue areas and,
    when given, the guest agent's page classes."""

    def __init__(self, areas=(), classes=None):
        self.areas = list(areas)
        self.classes = classes

    def __call__(self, address):
        names = [label for start, end, label in self.areas
                 if start <= address < end]
        if self.classes is not None and address // PAGE < len(self.classes):
            c = self.classes[address // PAGE]
            name, holds = PAGE_CLASSES[c if c < len(PAGE_CLASSES) else 0]
            names.append(f"the guest agent classes its page as {name} "
                         f"({holds})")
        return "; ".join(names) or "no virtqueue; owner unknown"


def owners_of(vm, dump_path=None, classes_of=None):
    """Owners for @vm's RAM (stopped or running), from its virtqueues (and
    buffers in @dump_path); @classes_of, a running VM with the agent whose
    page classes describe the same RAM (the destination, resumed)."""
    classes = None
    if classes_of is not None:
        try:
            if classes_of.status() != "running":
                classes_of.qmp.cmd("cont")
                time.sleep(1)
            classes = page_classes(classes_of.qmp,
                                   dump_path + ".classes" if dump_path
                                   else f"/tmp/{classes_of.name}.classes")
        except (QMPError, OSError, TimeoutError):
            classes = None
    return Owners(virtqueue_areas(vm.qmp, dump_path), classes)
