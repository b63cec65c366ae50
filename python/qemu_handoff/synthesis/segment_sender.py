# SPDX-License-Identifier: GPL-2.0-or-later
"""Sending an early-start overlay's segments to a QEMU that already runs
its VM (docs/design/early-start.md §4, -handoff ...,feed-fd=N).

The overlay file QEMU launches from (the spool) first holds everything
but the segments: header, description, migration stream (table part and
device state), at its full size. SegmentSender then copies each segment
into it and tells QEMU over the feed socket (formats/early_feed.py):
the segments QEMU wants first, the rest in number order, paced at a rate
when given (what a link would allow). QEMU checks every segment against
its authenticated table when it reads it; the sender only says when.
"""

import collections
import select
import socket
import threading
import time

from ..formats import early_feed
from ..formats import overlay as overlay_file


def segments_start(path):
    """Where the segments of the early-start overlay at @path begin, and
    the file's size (formats.overlay.EarlyStart.segments)."""
    header, description = overlay_file.read_info(path)
    early = overlay_file.early_start(description)
    if early is None:
        raise overlay_file.OverlayError("not an early-start overlay")
    return early.segments(header)


def prepare_spool(source, spool):
    """Writes into @spool (new) what QEMU needs to launch from @source
    before any segment: every byte before the segments, the file at its
    full size. Returns (segments start, file size)."""
    start, size = segments_start(source)
    with open(source, "rb") as src, \
            open(spool, "xb") as dst:
        left = start
        while left:
            data = src.read(min(left, 1 << 20))
            if not data:
                raise overlay_file.OverlayError(f"{source}: ends early")
            dst.write(data)
            left -= len(data)
        dst.truncate(size)
    return start, size


class SegmentSender(threading.Thread):
    """Copies @source's segments into @spool and says so on @sock, the
    feed QEMU was given: wanted segments first, the rest in order at
    @rate bytes a second (None: unpaced). With @hold_after=N only the
    first N go in order, then only wanted ones until release(). After
    the last, it waits for QEMU to close its end. @error holds what
    stopped it, if anything did."""

    def __init__(self, source, spool, sock, rate=None, hold_after=None):
        super().__init__(daemon=True)
        self.start_offset, self.size = segments_start(source)
        self._source = source
        self._spool = spool
        self._sock = sock
        self._rate = rate
        self._hold_after = hold_after
        self._released = threading.Event()
        self.layout = None
        self.sent = []          # segment numbers in the order sent
        self.wanted = []        # in the order QEMU asked
        self.error = None
        self.finished = threading.Event()

    def release(self):
        """The held background order goes on."""
        self._released.set()

    def run(self):
        try:
            self._send()
        except Exception as e:          # reported to whoever joins
            self.error = e
        finally:
            self.finished.set()

    def _held(self, sent):
        return self._hold_after is not None and \
            len(sent) >= self._hold_after and not self._released.is_set()

    def _pick(self, sent):
        """The next segment to send: wanted first, then in order."""
        if self._queue:
            return self._queue.popleft()
        if self._held(sent):
            return None
        while self._order and self._order[0] in sent:
            self._order.popleft()
        return self._order.popleft() if self._order else None

    def _read_wants(self, timeout, sent):
        """QEMU's WANTs within @timeout, queued unless @sent already (so
        the queue holds only what is still to send); False once it
        closed."""
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return True
        data = self._sock.recv(4096)
        if not data:
            return False
        ks, self._pending = early_feed.wanted(self._pending + data,
                                              len(self.layout.segments))
        self.wanted.extend(ks)
        self._queue.extend(k for k in ks if k not in sent)
        return True

    def _send(self):
        self.layout = early_feed.read_layout(self._sock, self.start_offset,
                                             self.size)
        count = len(self.layout.segments)
        self._order = collections.deque(range(count))
        self._queue, self._pending = collections.deque(), b""
        sent, open_ = set(), True
        next_at = time.monotonic()
        with open(self._source, "rb") as src, \
                open(self._spool, "r+b") as dst:
            while len(sent) < count and open_:
                idle = self._held(sent) and not self._queue
                timeout = 0.05 if idle else \
                    max(0.0, next_at - time.monotonic())
                open_ = self._read_wants(timeout, sent)
                if time.monotonic() < next_at:
                    continue
                k = self._pick(sent)
                if k is None:
                    continue
                offset, length = self.layout.segments[k]
                src.seek(offset)
                data = src.read(length)
                dst.seek(offset)
                dst.write(data)
                dst.flush()
                self._sock.sendall(early_feed.have(k))
                sent.add(k)
                self.sent.append(k)
                if self._rate:
                    next_at = max(next_at, time.monotonic()) + \
                        length / self._rate
        if len(sent) < count:
            raise early_feed.FeedError(f"QEMU closed the feed with "
                                       f"{len(sent)} of {count} segments "
                                       f"sent")
        # Every segment in: QEMU closes its end once it applied them.
        self._sock.shutdown(socket.SHUT_WR)
        while open_:
            open_ = self._read_wants(1.0, sent)
