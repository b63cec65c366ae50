# SPDX-License-Identifier: GPL-2.0-or-later
"""Working-set order files: which 4 KiB chunks a VM touched first, in
order, as QEMU's handoff-record-stop writes them (qemu/overlay/migration/
handoff-record-file.c; docs/overlay-format.md, "Working-set order").

The first line names the format (a comment to `qemu-handoff encode
--order`, which reads the rest), read from its one definition in
handoff-record.h; then "REGION CHUNK NS" per chunk, REGION the region's
name in the base (a RAM block's, or "disk"). A file is input from
disk: every line is checked, and a chunk named twice, times going back or
a file longer than @max_entries is refused by name.
"""

import os
import re

from ..paths import TOP

_HEADER_FILE = os.path.join(TOP, "qemu", "overlay", "migration",
                            "handoff-record.h")
with open(_HEADER_FILE) as _f:
    MAGIC = re.search(r'^#define HANDOFF_RECORD_MAGIC "([^"]+)"$', _f.read(),
                      re.M).group(1)
# A RAM block's name (QEMU's idstr: at most 255 printable bytes, no
# blank) or "disk".
_LINE = re.compile(rb"([!-~]{1,255}) (0|[1-9][0-9]{0,15}) "
                   rb"(0|[1-9][0-9]{0,18})\n")
MAX_LINE = 300
MAX_NS = (1 << 63) - 1


class WorkingSetError(ValueError):
    """Not a working-set order file, or a broken one."""


def _entry(path, number, line):
    m = _LINE.fullmatch(line)
    if not m:
        raise WorkingSetError(f"{path}:{number}: not 'REGION CHUNK NS'")
    region = m.group(1).decode()
    chunk, ns = int(m.group(2)), int(m.group(3))
    if ns > MAX_NS:
        raise WorkingSetError(f"{path}:{number}: time out of range")
    return region, chunk, ns


def read(path, max_entries=1 << 24):
    """The entries of order file @path: [(region name, chunk, ns)], in
    order.
    Read as bytes, a bounded line at a time: the file may be anything."""
    entries, seen, last_ns = [], set(), 0
    with open(path, "rb") as f:
        if f.readline(MAX_LINE) != MAGIC.encode() + b"\n":
            raise WorkingSetError(f"{path}: not a working-set order file "
                                  f"(its first line is not '{MAGIC}')")
        for number, line in enumerate(iter(lambda: f.readline(MAX_LINE),
                                           b""), start=2):
            region, chunk, ns = _entry(path, number, line)
            if (region, chunk) in seen:
                raise WorkingSetError(f"{path}:{number}: region {region} "
                                      f"chunk {chunk} named twice")
            if ns < last_ns:
                raise WorkingSetError(f"{path}:{number}: time goes back")
            if len(entries) == max_entries:
                raise WorkingSetError(f"{path}: more than {max_entries} "
                                      "entries")
            seen.add((region, chunk))
            entries.append((region, chunk, ns))
            last_ns = ns
    return entries
