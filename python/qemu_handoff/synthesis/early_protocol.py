# SPDX-License-Identifier: GPL-2.0-or-later
"""The early-start phase of a synthesis between client and service
(docs/synthesis.md, "Early start"): its one definition.

After the request line and everything of the overlay before its
segments, the service answers either with a refusal line (JSON, as
always: it begins with "{") or with the segments' layout, the one QEMU
wrote on its feed (formats/early_feed.py: it begins with the feed's
magic). Then:

  client -> service: segments, each a frame (u32 number, u32 length,
                     then its bytes), in any order, each once.

Before the layout comes, while the service launches QEMU, the client
may already send the segments' area from its start, in EAGER frames
(number EAGER, a length of 1 byte to 64 KiB, the most a segment may
be, then the area's next bytes), so that the link is not idle meanwhile; it stops at the
first byte of the answer, and its numbered frames follow. The
segments lying whole in the bytes sent so are in (Layout.whole_in),
for both sides alike; the one cut off by the last EAGER frame comes
again in a frame of its own. An EAGER frame after a numbered frame, or
on a resumed connection, breaks the protocol.
  service -> client: messages of early_feed.MESSAGE_BYTES (u32 kind,
                     u32 argument): WANT k, a segment something waits
                     for (send it next); NOTE n, then n bytes of a JSON
                     object: {"ok": true, "state": ...} when the VM runs
                     (its ports and timings), and a last one when every
                     segment is in ("complete": true) or the synthesis
                     failed ({"ok": false, "error": ...}). The service
                     closes after the last note. The first note, right
                     after the layout, names the VM ("state": "loading"):
                     what a client needs to come back.

A client whose connection broke comes back within the service's bound
(serve --reconnect-timeout) with the request line {"op": "resume",
"name": VM}: the service answers with a refusal line, or with the layout
again, then RECEIVED n and n bytes, a bitmap of the segments it has
(segment k is bit k % 8 of byte k // 8), then as above, the WANTs still
unanswered first.
"""

import json
import struct

from ..formats import early_feed

EAGER = 0xFFFFFFFF          # a frame of the segments' area, in order
NOTE = 16                   # not a kind of QEMU's feed
RECEIVED = 17
NOTE_MAX = 64 << 10         # bytes of one note's JSON
FRAME = struct.Struct(">II")
_MESSAGE = struct.Struct(">II")


class ProtocolError(Exception):
    """A peer that does not follow the protocol, with the reason."""


def frame_header(k, length):
    return FRAME.pack(k, length)


def eager_frame(data):
    """An EAGER frame of @data, the area's next bytes."""
    assert 0 < len(data) <= early_feed.SEGMENT_MAX_BYTES
    return FRAME.pack(EAGER, len(data)) + data


def note(obj):
    data = json.dumps(obj).encode()
    assert len(data) <= NOTE_MAX
    return _MESSAGE.pack(NOTE, len(data)) + data


def want(k):
    return _MESSAGE.pack(early_feed.WANT, k)


def received(bits):
    """The RECEIVED message of @bits (a bytearray, one byte a segment)."""
    packed = bytearray((len(bits) + 7) // 8)
    for k, bit in enumerate(bits):
        if bit:
            packed[k // 8] |= 1 << (k % 8)
    return _MESSAGE.pack(RECEIVED, len(packed)) + bytes(packed)


class MessageReader:
    """The service's messages as they come: feed() bytes, then take
    (kind, value) pairs: ("want", k) or ("note", dict)."""

    def __init__(self, count):
        self._count = count
        self._data = b""

    def feed(self, data):
        self._data += data
        out = []
        while len(self._data) >= _MESSAGE.size:
            kind, arg = _MESSAGE.unpack_from(self._data)
            if kind == early_feed.WANT:
                if arg >= self._count:
                    raise ProtocolError(f"WANT of segment {arg} of "
                                        f"{self._count}")
                out.append(("want", arg))
                self._data = self._data[_MESSAGE.size:]
                continue
            size = (self._count + 7) // 8
            if not (kind == NOTE and arg <= NOTE_MAX or
                    kind == RECEIVED and arg == size):
                raise ProtocolError(f"message kind {kind} ({arg})")
            if len(self._data) < _MESSAGE.size + arg:
                break
            body = self._data[_MESSAGE.size:_MESSAGE.size + arg]
            self._data = self._data[_MESSAGE.size + arg:]
            if kind == RECEIVED:
                out.append(("received", [k for k in range(self._count)
                                         if body[k // 8] >> (k % 8) & 1]))
                continue
            try:
                obj = json.loads(body)
            except ValueError:
                raise ProtocolError("a note that is not JSON") from None
            if not isinstance(obj, dict):
                raise ProtocolError("a note that is not a JSON object")
            out.append(("note", obj))
        return out
