# SPDX-License-Identifier: GPL-2.0-or-later
"""The service's side of an early start (docs/synthesis.md, "Early
start"): between a client still sending segments and a QEMU already
running their VM.

The client's segment frames are checked against the layout QEMU gave
(number, length), written into the spool at their place, and announced
to QEMU (HAVE); QEMU's WANTs go to the client, each once, unless the
segment is in already. One thread (the pump) is the only user of the
client's socket while the relay runs, TLS included; notes for the client
(the VM runs, the end) go through it.

The pump starts before QEMU does: what the client sends meanwhile (EAGER
frames, early_protocol.py), the segments' area in order, is written into
the spool, and the segments it holds whole are announced once QEMU gave
the layout (set_layout).
"""

import collections
import os
import select
import socket
import ssl
import threading
import time

from ..formats import early_feed
from . import early_protocol


STOP_GRACE_S = 5.0          # for the last notes before the pump is cut


class RelayError(Exception):
    """The relay stopped: the client broke the protocol."""


class ClientGone(Exception):
    """The client's connection ended, or it fell silent: it may come back
    (resume)."""


def write_all(fd, data, offset):
    """pwrite of all of @data: a short write (a full disk) must not leave
    a segment announced with bytes missing."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"spool: wrote {n} bytes")
        view, offset = view[n:], offset + n


class SegmentRelay:
    """@client: the client's socket; @clock: its ClientClock (deadline and
    idle bound); @feed: our end of QEMU's feed; @spool_fd: the spool open
    for writing (the relay writes through a copy of its own, closed when
    the pump ends); @layout: QEMU's, already checked, or None until
    set_layout(), with @area the segments' (start, end) in the spool.
    @error is the client's fault, @feed_error QEMU's, @gone why the
    client left (it may come back: resume())."""

    def __init__(self, client, clock, feed, spool_fd, layout=None,
                 area=None):
        self.client, self.clock, self.feed = client, clock, feed
        # Ours, open while the pump runs (start, resume): what cut() and
        # stop() shut down, so that neither touches a descriptor its
        # owner may have closed (and the kernel given to another socket)
        # meanwhile.
        self._client_fd = None
        self._spool = spool_fd
        self.spool_fd = os.dup(spool_fd)
        if area is None:
            last = layout.segments[len(layout.segments) - 1]
            area = (layout.start, last[0] + last[1])
        self._area_start, self._area_bytes = area[0], area[1] - area[0]
        self.layout = None
        self.count = 0
        self.received = self._asked = bytearray()
        self.n_received = 0
        self.forwarded = 0          # WANTs sent to the client
        self.error = self.feed_error = self.gone = None
        self.all_in = threading.Event()
        # QEMU closed its feed: every segment in (or QEMU ended).
        self.feed_closed = threading.Event()
        # The area's bytes the client sent in EAGER frames (the pump's),
        # whether more may come, and how many segments they made whole
        # that QEMU was told of; _feed_lock orders what QEMU is told.
        self.eager_bytes = 0
        self._eager_open = True
        self._eager_told = 0
        self._eager_looked = None   # eager_bytes at the last look
        self._layout_at = None
        self._feed_lock = threading.Lock()
        self._lock = threading.Lock()
        self._outbox = collections.deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closing = False
        # Something went out to the client on this connection (the
        # layout first): its answers are notes from then on. Not before:
        # a pump ended before it wrote (a bad EAGER frame) leaves a client
        # waiting for the layout or a refusal line.
        self.framed = False
        self._cut_why = None
        self._threads = []
        if layout is not None:
            self._set(layout)

    def start(self):
        """The pump; QEMU's side too once the layout is known."""
        self._client_fd = os.dup(self.client.fileno())
        self._spawn(self._pump)             # _threads[0]
        if self.layout is not None:
            self._spawn(self._read_feed)
        return self

    def set_layout(self, layout, greeting):
        """QEMU's layout, read once it launched: what the client sent
        before it is announced, QEMU's WANTs are heard from now on, and
        the client's silence counts from now. @greeting (the layout
        packed, then the note naming the VM) is queued as one write: a
        client may answer the layout at once, and its first frame may
        end the pump (a frame of no segment); had the note been queued
        on its own, that could happen before it went out, and the
        client would never hear its VM's name."""
        self._set(layout)
        self.send(greeting)
        # QEMU's WANTs heard before it is told (it never blocks on its
        # feed, but the telling may take a while for many segments).
        self._spawn(self._read_feed)
        try:
            self._announce_eager()
        except early_feed.FeedError as e:
            self.feed_error = self.feed_error or str(e)
        self._wake()

    def _set(self, layout):
        with self._lock:
            self.count = len(layout.segments)
            self.received = bytearray(self.count)
            self._asked = bytearray(self.count)
            self._layout_at = time.monotonic()
            self.layout = layout        # last: the pump reads it unlocked

    def _spawn(self, target):
        t = threading.Thread(target=self._run, args=(target,), daemon=True)
        t.start()
        self._threads.append(t)

    def resume(self, client, clock, preamble, note):
        """The client back on @client (its pump ended): @preamble (the
        layout), then what it lacks to go on: the segments received, the
        WANTs unanswered, then @note (its VM's state); all one write,
        for the reason set_layout() gives."""
        # Ended (it set @gone), but maybe not yet past closing its copy
        # of the spool fd, which must not be the new pump's.
        self._threads[0].join()
        with self._lock:
            self._outbox.clear()
            self._outbox.append(b"".join(
                [preamble, early_protocol.received(self.received)] +
                [early_protocol.want(k) for k in range(self.count)
                 if self._asked[k] and not self.received[k]] +
                [early_protocol.note(note)]))
        self.client, self.clock = client, clock
        self.framed = False
        self._eager_open = False        # a resumed client sends frames
        self.spool_fd = os.dup(self._spool)
        with self._lock:
            self._client_fd = os.dup(client.fileno())
        self.gone = self._cut_why = None
        t = threading.Thread(target=self._run, args=(self._pump,),
                             daemon=True)
        self._threads[0] = t
        t.start()

    def _run(self, target):
        try:
            target()
        except early_feed.FeedError as e:       # QEMU's side
            self.feed_error = self.feed_error or str(e)
        except ClientGone as e:
            self.gone = self._cut_why or str(e)
        except (ConnectionError, TimeoutError, ssl.SSLError) as e:
            if target == self._read_feed:
                self.feed_error = self.feed_error or str(e)
            else:
                self.gone = self._cut_why or \
                    f"the client's connection failed ({e})"
        except (RelayError, OSError, early_protocol.ProtocolError) as e:
            if target == self._read_feed:
                self.feed_error = self.feed_error or str(e)
            elif self.error is None:
                self.error = str(e)
        finally:
            if target == self._pump:
                os.close(self.spool_fd)
                with self._lock:
                    os.close(self._client_fd)
                    self._client_fd = None
            else:
                self.feed_closed.set()
            self._wake()

    def _wake(self):
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def send(self, data):
        """Queues @data (whole messages) for the client."""
        with self._lock:
            self._outbox.append(data)
        self._wake()

    def note(self, obj):
        self.send(early_protocol.note(obj))

    def stop(self):
        """Sends what is queued, for STOP_GRACE_S at most, then stops the
        pump: once this returns, it is gone and the caller alone uses the
        client's socket (False: it had to be cut off, the socket is shut
        down). The pump may be blocked in a TLS read or write of a client
        that neither reads nor finishes a record; shutting the socket
        down under it, through a descriptor of our own, ends that without
        touching the TLS object from this thread."""
        self._closing = True
        self._wake()
        pump = self._threads[0]
        pump.join(timeout=STOP_GRACE_S)
        cut = pump.is_alive()
        if cut:
            self._shut_client()
            pump.join()
        self._wake_r.close()
        self._wake_w.close()
        return not cut

    def cut(self, why):
        """Ends the client's connection from another thread: a resume
        replaces one the service still holds open (half-open: its client
        is already back on another). The pump ends as if the client
        left, @why the cause. Before stop() only: the socket is still
        open then."""
        self._cut_why = why
        self._shut_client()

    def _shut_client(self):
        """Through the relay's own descriptor of the client's socket, so
        that the TLS object, the pump's, is not touched from this thread;
        nothing once the pump ended (the client is gone for it)."""
        with self._lock:
            if self._client_fd is None:
                return
            try:
                with socket.socket(fileno=os.dup(self._client_fd)) as raw:
                    raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- QEMU's side ---------------------------------------------------

    def _read_feed(self):
        pending = b""
        while True:
            data = self.feed.recv(4096)
            if not data:
                return          # QEMU applied every segment, or ended
            ks, pending = early_feed.wanted(pending + data, self.count)
            for k in ks:
                with self._lock:
                    if self.received[k] or self._asked[k]:
                        continue
                    self._asked[k] = 1
                    self.forwarded += 1
                self.send(early_protocol.want(k))

    # --- the client's side ---------------------------------------------

    def _take_frames(self, buf):
        """Whole frames out of @buf into the spool; returns the rest."""
        head = early_protocol.FRAME.size
        while len(buf) >= head:
            k, length = early_protocol.FRAME.unpack_from(buf)
            if k == early_protocol.EAGER:
                self._check_eager(length)
                if len(buf) < head + length:
                    break
                write_all(self.spool_fd, buf[head:head + length],
                          self._area_start + self.eager_bytes)
                self.eager_bytes += length
                del buf[:head + length]
                self._announce_eager()
                continue
            layout = self.layout
            if layout is None:
                raise RelayError(f"segment frame {k} before the layout")
            self._eager_open = False
            if k >= self.count or layout.segments[k][1] != length:
                raise RelayError(f"segment frame {k} of {length} bytes: "
                                 f"not a segment of this overlay")
            if len(buf) < head + length:
                break
            if not self.received[k]:
                offset = layout.segments[k][0]
                write_all(self.spool_fd, buf[head:head + length], offset)
                with self._feed_lock:
                    self._have(k)
            del buf[:head + length]
        return buf

    def _check_eager(self, length):
        if not self._eager_open or \
                not 0 < length <= early_feed.SEGMENT_MAX_BYTES or \
                length > self._area_bytes - self.eager_bytes:
            raise RelayError(f"eager frame of {length} bytes at byte "
                             f"{self.eager_bytes} of the segments' "
                             f"{self._area_bytes}: not their next bytes "
                             f"before any segment frame")

    def _announce_eager(self):
        """QEMU told of the segments the EAGER frames made whole, once
        it gave the layout (from the pump, or set_layout's thread)."""
        with self._feed_lock:
            layout, eager = self.layout, self.eager_bytes
            # The pump looks every turn: only when the bytes in changed.
            if layout is None or self._eager_looked == eager:
                return
            self._eager_looked = eager
            whole = layout.whole_in(eager)
            while self._eager_told < whole:
                if not self.received[self._eager_told]:
                    self._have(self._eager_told)
                self._eager_told += 1

    def _have(self, k):
        """Segment @k, in the spool, is in: QEMU is told (_feed_lock
        held)."""
        with self._lock:
            if self.received[k]:
                return
            self.received[k] = 1
            self.n_received += 1
        try:
            self.feed.sendall(early_feed.have(k))
            if self.n_received == self.count:
                self.all_in.set()
                # Every segment in: the feed may end.
                self.feed.shutdown(socket.SHUT_WR)
        except OSError as e:
            raise early_feed.FeedError(f"QEMU's feed: {e}") from None

    def _readable(self, read):
        if read and isinstance(self.client, ssl.SSLSocket) and \
                self.client.pending():
            return True, False
        with self._lock:
            want_write = bool(self._outbox)
        timeout = min(1.0, max(0.0, self.clock.end - time.monotonic()))
        r, w, _ = select.select([self.client, self._wake_r] if read
                                else [self._wake_r],
                                [self.client] if want_write else [], [],
                                timeout)
        if self._wake_r in r:
            self._wake_r.recv(4096)
        return self.client in r, self.client in w

    def _pump(self):
        buf = bytearray()
        last = time.monotonic()
        while True:
            with self._lock:
                if self._closing and not self._outbox:
                    return
            if self._closing:
                # Notes only now: nothing more is read of the client.
                self._flush()
                continue
            if time.monotonic() >= self.clock.end:
                raise RelayError(f"the transfer took longer than "
                                 f"{self.clock.total_s:g} s, this "
                                 f"service's limit")
            self._announce_eager()
            readable, writable = self._readable(not self.all_in.is_set())
            if readable:
                self.client.settimeout(self.clock.idle_s)
                data = self.client.recv(1 << 16)
                if not data:
                    raise ClientGone(f"the client left with "
                                     f"{self.n_received} of {self.count} "
                                     f"segments in")
                buf = self._take_frames(buf + data)
                last = time.monotonic()
            elif self._layout_at is not None and \
                    not self.all_in.is_set() and \
                    time.monotonic() - max(last, self._layout_at) > \
                    self.clock.idle_s:
                raise ClientGone(f"the client sent nothing for "
                                 f"{self.clock.idle_s:g} s with "
                                 f"{self.n_received} of {self.count} "
                                 f"segments in")
            if writable:
                self._flush(one=True)

    def _flush(self, one=False):
        """Sends the queued messages (@one: the next only)."""
        while True:
            with self._lock:
                data = self._outbox.popleft() if self._outbox else b""
            if not data:
                return
            self.client.settimeout(self.clock.idle_s)
            self.framed = True
            self.client.sendall(data)
            if one:
                return
