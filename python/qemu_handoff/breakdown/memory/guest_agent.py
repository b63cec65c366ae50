# SPDX-License-Identifier: GPL-2.0-or-later
"""Memory by what the guest keeps in it, from the qemu-handoff guest agent.

The VM's QEMU (its QMP socket) is asked for two things: the agent's map
of what every page frame holds (QMP handoff-agent-page-classes: free,
page cache, anonymous, kernel, other), and the guest's RAM (pmemsave).
A page is modified when it differs from the base's memory image at the
same address: what a handoff without dedup sends (scripts/bench.py's
"modified state" counts it the same way). The modified pages are then
counted by class.

The VM keeps running: the map and the RAM are taken a moment apart, and
each of them while memory changes. The figures describe the VM, they do
not account for it byte by byte. RAM the machine maps above 4 GiB (guests
of more than 3 GiB on the pc machine) is not read yet.

The document's "memory" member:
  source          "guest-agent"
  ram_bytes       the guest's RAM (the base's pc.ram)
  modified_bytes  pages that differ from the base
  classes         bytes of modified pages per class: free, page_cache,
                  anonymous, kernel, other; unmapped counts pages the
                  agent's map does not cover
  guest           the same classes over all of the guest's RAM
  free_bytes, page_cache_bytes, anonymous_bytes
                  of modified pages (classes' values, for short)
"""

import os
import tempfile
import time

from ...formats import manifest
from ...formats.agent_protocol import PAGE_CLASSES
from .. import BreakdownError
from ...qmp import QMPClient, QMPError

NAME = "guest-agent"
PAGE = 4096
# HandoffAgentPageClass (guest-agent/include/handoff_agent_protocol.h).
# The classes by number, as the protocol header defines them; the report
# calls the header's "cache" page_cache (its JSON keys are documented).
CLASSES = tuple("page_cache" if name == "cache" else name
                for name, _ in PAGE_CLASSES)
# Below 4 GiB, the pc machine maps at most this much RAM at its address.
LOW_RAM_LIMIT = 3 << 30
CHUNK_PAGES = 16384             # pages compared per read (64 MiB)


def available(options):
    return bool(options.qmp)


def _base_ram(base_dir):
    """(path, size) of the base's main RAM image."""
    try:
        ram = manifest.read(base_dir).ram("pc.ram")
    except manifest.ManifestError as e:
        raise BreakdownError(str(e))
    path, size = os.path.realpath(ram.path), ram.size
    # The manifest's path is inside the directory; a link in it may not be.
    if not path.startswith(os.path.realpath(base_dir) + os.sep):
        raise BreakdownError(f"{base_dir}: pc.ram lies outside it")
    return path, size


def _ask_classes(qmp, path):
    """Sends the request; QEMU asks to retry while it resets the agent's
    port after an answer that stopped midway (for 300 ms)."""
    for attempt in range(10):
        try:
            return qmp.cmd("handoff-agent-page-classes", path=path)
        except QMPError as e:
            if "retry" not in e.desc or attempt == 9:
                raise
            time.sleep(0.5)


def _page_classes(qmp, path, progress):
    progress("memory: asking the guest agent what each page holds")
    try:
        _ask_classes(qmp, path)
        # QEMU ends the request after 10 s without a byte from the agent.
        data = qmp.wait_event("HANDOFF_AGENT_PAGE_CLASSES", 600,
                              lambda d: d.get("path") == path)
        if "error" in data:
            raise BreakdownError(f"the guest agent's page classes: "
                                 f"{data['error']}")
        with open(path, "rb") as f:
            classes = f.read()
    except (QMPError, OSError) as e:
        raise BreakdownError(f"the guest agent's page classes: {e}")
    if not classes:
        # The agent answers so when it cannot read /proc/kpageflags.
        raise BreakdownError("the guest agent sent an empty page-class map "
                             "(its log in the guest says why)")
    return classes


def _class_name(classes, page):
    """The class of @page in the agent's map (a byte the protocol does not
    define counts as other: the map is the guest's word)."""
    if page >= len(classes):
        return "unmapped"
    c = classes[page]
    return CLASSES[c] if c < len(CLASSES) else "other"


def _count(ram_path, base_path, ram_bytes, classes):
    """(modified bytes by class, all bytes by class)."""
    modified = dict.fromkeys(CLASSES + ("unmapped",), 0)
    guest = dict(modified)
    pages = ram_bytes // PAGE
    with open(ram_path, "rb") as ram, open(base_path, "rb") as base:
        for first in range(0, pages, CHUNK_PAGES):
            a = memoryview(ram.read(CHUNK_PAGES * PAGE))
            b = memoryview(base.read(CHUNK_PAGES * PAGE))
            for i in range(min(CHUNK_PAGES, pages - first)):
                page = first + i
                name = _class_name(classes, page)
                guest[name] += PAGE
                o = i * PAGE
                if a[o:o + PAGE] != b[o:o + PAGE]:
                    modified[name] += PAGE
    return modified, guest


def collect(options, progress):
    if not options.base:
        raise BreakdownError("--qmp needs --base DIR: the VM's base, which "
                             "modified memory is counted against")
    base_path, ram_bytes = _base_ram(options.base)
    if ram_bytes > LOW_RAM_LIMIT:
        raise BreakdownError(f"guest RAM of {ram_bytes >> 20} MiB: RAM "
                             f"mapped above 4 GiB is not read yet")
    try:
        qmp = QMPClient(options.qmp, timeout=60)
    except (OSError, RuntimeError, TimeoutError) as e:
        raise BreakdownError(f"{options.qmp}: no QMP monitor ({e})")
    try:
        with tempfile.TemporaryDirectory(dir=options.tmpdir,
                                         prefix="vm-breakdown-") as tmp:
            # QEMU writes both files here, as its own user: --tmpdir must
            # be writable by it (it is when QEMU runs as the caller).
            classes = _page_classes(qmp, os.path.join(tmp, "classes"),
                                    progress)
            progress(f"memory: reading {ram_bytes >> 20} MiB of guest RAM")
            ram_path = os.path.join(tmp, "ram")
            try:
                qmp.slow_cmd(600, "pmemsave", val=0, size=ram_bytes,
                             filename=ram_path)
            except (QMPError, OSError) as e:
                raise BreakdownError(f"reading guest RAM: {e}")
            modified, guest = _count(ram_path, base_path, ram_bytes,
                                     classes)
    finally:
        qmp.close()
    doc = {"source": NAME, "ram_bytes": ram_bytes,
           "modified_bytes": sum(modified.values()),
           "classes": modified, "guest": guest}
    for name in ("free", "page_cache", "anonymous"):
        doc[f"{name}_bytes"] = modified[name]
    return doc
