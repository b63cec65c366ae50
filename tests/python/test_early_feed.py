# SPDX-License-Identifier: GPL-2.0-or-later
"""formats.early_feed: the segment feed's layout and messages as a sender
reads them from QEMU, which it trusts only to name places inside the
segments' area of the spool."""

import socket
import struct

import pytest
from hypothesis import given, strategies as st

from qemu_handoff.formats import early_feed


def layout_bytes(start, entries, magic=early_feed.MAGIC,
                 version=early_feed.VERSION, count=None):
    out = struct.pack(">IIIIQ", magic, version,
                      len(entries) if count is None else count, 0, start)
    for offset, length in entries:
        out += struct.pack(">QII", offset, length, 0)
    return out


def read(data, start=1000, size=1000 + 3 * 65536):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        return early_feed.read_layout(b, start, size)


def test_layout_read():
    entries = [(1000, 65536), (66536, 65536), (132072, 65536)]
    layout = read(layout_bytes(1000, entries))
    assert layout.start == 1000
    assert layout.segments == entries and len(layout.segments) == 3
    assert early_feed.pack_layout(layout) == layout_bytes(1000, entries)


@pytest.mark.parametrize("data, cause", [
    (layout_bytes(1000, [], magic=1), "not a segment feed"),
    (layout_bytes(1000, [], version=2), "not a segment feed"),
    (layout_bytes(999, []), "the segments start at 999"),
    (layout_bytes(1000, [(999, 10)]), "segment 0: 10 bytes at 999"),
    (layout_bytes(1000, [(1000, 0)]), "segment 0: 0 bytes"),
    (layout_bytes(1000, [(1000, 65537)]), "segment 0: 65537 bytes"),
    (layout_bytes(1000, [(1000, 10), (1000 + 3 * 65536 - 5, 10)]),
     "segment 1: 10 bytes"),
    # Overlapping (a compromised QEMU's): the service would write one
    # client segment over another's place.
    (layout_bytes(1000, [(1000, 65536), (1000, 65536), (1000, 65536)]),
     "segment 1: 65536 bytes at 1000"),
    (layout_bytes(1000, [(1000, 65536)]), "the segments end at 66536"),
    (layout_bytes(1000, []), "0 segments"),
    (layout_bytes(1000, [], count=1 << 30), "segments in"),
    (layout_bytes(1000, [(1000, 10)], count=2), "ended after"),
])
def test_layout_refused(data, cause):
    with pytest.raises(early_feed.FeedError, match=cause):
        read(data)


@given(st.lists(st.integers(0, 99), max_size=20), st.integers(0, 7))
def test_wants_parsed_across_reads(ks, cut):
    data = b"".join(struct.pack(">II", early_feed.WANT, k) for k in ks)
    data += b"\0" * cut
    got, rest = early_feed.wanted(data, 100)
    assert got == ks and rest == data[len(data) - cut:]


@pytest.mark.parametrize("kind, k", [(early_feed.HAVE, 1),
                                     (early_feed.WANT, 100), (7, 0)])
def test_wants_refused(kind, k):
    with pytest.raises(early_feed.FeedError, match="not a WANT"):
        early_feed.wanted(struct.pack(">II", kind, k), 100)


def test_have_is_the_headers():
    assert early_feed.have(5) == struct.pack(">II", early_feed.HAVE, 5)
    assert (early_feed.MAGIC, early_feed.HAVE, early_feed.WANT) == \
        (0x51484546, 1, 2)
