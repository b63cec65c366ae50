# SPDX-License-Identifier: GPL-2.0-or-later
"""The segment feed of an early start (-handoff ...,early-start=on,
feed-fd=N): its wire constants, read from their one definition,
qemu/overlay/migration/handoff-early-feed.h, and its messages.

QEMU writes the layout of the overlay's segments (from its authenticated
table), then WANT messages; the sender writes each segment into the
overlay file and then HAVE. The layout comes from QEMU, which a sender
trusts no further than to write inside the segments' area of a file it
owns: every entry is checked against that area here.
"""

import array
import bisect
import os
import re
import struct

from ..paths import TOP

HEADER = os.path.join(TOP, "qemu", "overlay", "migration",
                      "handoff-early-feed.h")


def _read():
    with open(HEADER) as f:
        text = f.read()
    return {name: int(value, 0) for name, value in re.findall(
        r"^#define HANDOFF_EARLY_FEED_(\w+) (0x[0-9a-f]+|\d+)u?\b", text,
        re.M)}


_DEFINES = _read()
MAGIC = _DEFINES["MAGIC"]
VERSION = _DEFINES["VERSION"]
LAYOUT_HEADER_BYTES = _DEFINES["LAYOUT_HEADER_BYTES"]
LAYOUT_ENTRY_BYTES = _DEFINES["LAYOUT_ENTRY_BYTES"]
MESSAGE_BYTES = _DEFINES["MESSAGE_BYTES"]
HAVE = _DEFINES["HAVE"]
WANT = _DEFINES["WANT"]
SEGMENT_MAX_BYTES = 64 << 10        # the engine's HANDOFF_SEGMENT_MAX_BYTES
SEGMENTS_MAX = 1 << 22              # the engine's bound on a table's count

_LAYOUT_HEADER = struct.Struct(">IIIIQ")
_LAYOUT_ENTRY = struct.Struct(">QII")
_MESSAGE = struct.Struct(">II")
assert _LAYOUT_HEADER.size == LAYOUT_HEADER_BYTES
assert _LAYOUT_ENTRY.size == LAYOUT_ENTRY_BYTES
assert _MESSAGE.size == MESSAGE_BYTES


class FeedError(Exception):
    """A feed that does not follow the protocol, with the reason."""


class _Segments:
    """(offset, length) of segment k, for k in range(len()), kept in two
    arrays: 12 bytes a segment, not two Python integers and a tuple."""

    def __init__(self, offsets, lengths):
        self._offsets, self._lengths = offsets, lengths

    def __len__(self):
        return len(self._lengths)

    def __getitem__(self, k):
        return self._offsets[k], self._lengths[k]

    def __eq__(self, other):
        return list(self) == list(other)


class Layout:
    """Where each segment lies in the overlay file: @segments[k] is
    (offset, length), the segments one after another from @start to the
    end of the file."""

    def __init__(self, start, offsets, lengths):
        self.start = start
        self.segments = _Segments(offsets, lengths)

    def whole_in(self, nbytes):
        """How many segments lie whole in the first @nbytes of the
        segments' area: segments 0 to that number - 1."""
        segments = self.segments
        return bisect.bisect_right(
            range(len(segments)), self.start + nbytes,
            key=lambda k: segments[k][0] + segments[k][1])


def _read_exactly(sock, n):
    data = bytearray(n)
    view, got = memoryview(data), 0
    while got < n:
        part = sock.recv(min(n - got, 1 << 20))
        if not part:
            raise FeedError(f"the feed ended after {got} of the "
                            f"{n} bytes of its layout")
        view[got:got + len(part)] = part
        got += len(part)
    return data


def read_layout(sock, start, file_size):
    """The layout QEMU writes first, checked: the segments one after
    another from @start, where the sender expects them, to @file_size,
    none longer than the engine writes, at most as many as it allows."""
    magic, version, count, zero, at = _LAYOUT_HEADER.unpack(
        _read_exactly(sock, LAYOUT_HEADER_BYTES))
    if magic != MAGIC or version != VERSION or zero:
        raise FeedError(f"not a segment feed of version {VERSION}: magic "
                        f"{magic:#x}, version {version}")
    if at != start:
        raise FeedError(f"the segments start at {at}, the overlay's "
                        f"description says {start}")
    if not 0 < count <= min(SEGMENTS_MAX, file_size - start):
        raise FeedError(f"{count} segments in {file_size - start} bytes")
    raw = _read_exactly(sock, count * LAYOUT_ENTRY_BYTES)
    offsets, lengths = array.array("Q"), array.array("I")
    end = start
    for k in range(count):
        offset, length, zero = _LAYOUT_ENTRY.unpack_from(
            raw, k * LAYOUT_ENTRY_BYTES)
        if zero or not 0 < length <= SEGMENT_MAX_BYTES or offset != end or \
                offset + length > file_size:
            raise FeedError(f"segment {k}: {length} bytes at {offset}, "
                            f"not the next of the segments' area [{start}, "
                            f"{file_size})")
        offsets.append(offset)
        lengths.append(length)
        end = offset + length
    if end != file_size:
        raise FeedError(f"the segments end at {end}, the file at "
                        f"{file_size}")
    return Layout(start, offsets, lengths)


def pack_layout(layout):
    """@layout as QEMU writes it (the service passes it on to a client)."""
    out = bytearray(_LAYOUT_HEADER.pack(MAGIC, VERSION, len(layout.segments),
                                        0, layout.start))
    for offset, length in layout.segments:
        out += _LAYOUT_ENTRY.pack(offset, length, 0)
    return bytes(out)


def have(k):
    """The message saying segment @k is in the file."""
    return _MESSAGE.pack(HAVE, k)


def wanted(data, count):
    """(segments wanted, bytes left over) from @data, QEMU's messages; a
    message that is not a WANT of one of @count segments is refused."""
    whole = len(data) - len(data) % MESSAGE_BYTES
    out = []
    for at in range(0, whole, MESSAGE_BYTES):
        kind, k = _MESSAGE.unpack_from(data, at)
        if kind != WANT or k >= count:
            raise FeedError(f"message kind {kind} for segment {k} of "
                            f"{count}: not a WANT")
        out.append(k)
    return out, data[whole:]
