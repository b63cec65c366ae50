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

_LAYOUT_HEADER = struct.Struct(">IIIIQ")
_LAYOUT_ENTRY = struct.Struct(">QII")
_MESSAGE = struct.Struct(">II")
assert _LAYOUT_HEADER.size == LAYOUT_HEADER_BYTES
assert _LAYOUT_ENTRY.size == LAYOUT_ENTRY_BYTES
assert _MESSAGE.size == MESSAGE_BYTES


class FeedError(Exception):
    """A feed that does not follow the protocol, with the reason."""


class Layout:
    """Where each segment lies in the overlay file: @segments is a list
    of (offset, length), in number order, all in [@start, file size)."""

    def __init__(self, start, segments):
        self.start = start
        self.segments = segments


def _read_exactly(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise FeedError(f"the feed ended after {len(data)} of the "
                            f"{n} bytes of its layout")
        data += part
    return data


def read_layout(sock, start, file_size):
    """The layout QEMU writes first, checked: segments inside [@start,
    @file_size), where the sender expects them, none longer than the
    engine writes."""
    magic, version, count, zero, at = _LAYOUT_HEADER.unpack(
        _read_exactly(sock, LAYOUT_HEADER_BYTES))
    if magic != MAGIC or version != VERSION or zero:
        raise FeedError(f"not a segment feed of version {VERSION}: magic "
                        f"{magic:#x}, version {version}")
    if at != start:
        raise FeedError(f"the segments start at {at}, the overlay's "
                        f"description says {start}")
    if count > (file_size - start):
        raise FeedError(f"{count} segments in {file_size - start} bytes")
    raw = _read_exactly(sock, count * LAYOUT_ENTRY_BYTES)
    segments = []
    for k in range(count):
        offset, length, zero = _LAYOUT_ENTRY.unpack_from(
            raw, k * LAYOUT_ENTRY_BYTES)
        if zero or not 0 < length <= SEGMENT_MAX_BYTES or \
                offset < start or offset + length > file_size:
            raise FeedError(f"segment {k}: {length} bytes at {offset}, "
                            f"outside the segments' area [{start}, "
                            f"{file_size})")
        segments.append((offset, length))
    return Layout(start, segments)


def pack_layout(layout):
    """@layout as QEMU writes it (the service passes it on to a client)."""
    return _LAYOUT_HEADER.pack(MAGIC, VERSION, len(layout.segments), 0,
                               layout.start) + b"".join(
        _LAYOUT_ENTRY.pack(offset, length, 0)
        for offset, length in layout.segments)


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
