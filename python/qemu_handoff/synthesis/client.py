# SPDX-License-Identifier: GPL-2.0-or-later
"""The client side of a synthesis: sends an overlay to a cloudlet's
synthesis service and returns its answer; lists and stops the client's
VMs there.

The answer can come before the overlay is all sent (a refusal: unknown
base, too large, busy), so the socket is watched for it while sending.

An early-start overlay (docs/synthesis.md, "Early start") goes in two
parts: everything before its segments, then the segments as frames,
those the service asks for first (early_protocol.py), while the VM
already runs at the cloudlet.
"""

import json
import os
import select
import socket
import ssl
import sys
import time

from ..formats import early_feed
from ..formats import overlay as overlay_file
from . import early_protocol
from .segment_sender import segments_start

CHUNK = 1 << 20
SEND_PIECE = 64 << 10
# Linux's value, which Python names only from 3.12 on.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


class SynthesisFailed(Exception):
    """The service refused the overlay or failed to launch it."""


def _progress(sent, total, start, out):
    elapsed = max(time.monotonic() - start, 1e-6)
    out.write(f"\rsynthesize: {sent / 1e6:8.1f} of {total / 1e6:.1f} MB "
              f"({100 * sent / max(total, 1):3.0f} %), "
              f"{sent * 8 / elapsed / 1e6:6.1f} Mbit/s")
    out.flush()


def read_json_line(sock):
    """One line of JSON from @sock (None if it closes first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return json.loads(data) if data.strip() else None


def ask(address, port, line, timeout=600):
    """Sends one request line to a VM's forwarded service (the edge
    applications' protocol) and returns its JSON answer."""
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        return read_json_line(s)


# Under TLS 1.3 the service checks the client's certificate after the
# client's side of the handshake is done: a refused client learns it on
# its first read or write, as an alert, a reset or a bare end of stream,
# whichever the race between the two sides gives.
TLS_REFUSED = ("the service ended the TLS session without an answer: it "
               "lets in only clients whose certificate its CA signed, not "
               "expired and not revoked")


def _read_answer(sock, timeout):
    sock.settimeout(timeout)
    try:
        answer = read_json_line(sock)
    except (ssl.SSLError, ConnectionResetError) as e:
        if not isinstance(sock, ssl.SSLSocket):
            raise
        raise SynthesisFailed(f"{TLS_REFUSED} ({e})") from None
    if answer is None:
        raise SynthesisFailed(TLS_REFUSED if isinstance(sock, ssl.SSLSocket)
                              else "the service closed the connection "
                                   "without an answer")
    return answer


def _send(sock, f, total, progress):
    """Sends the file; returns early (False) if an answer is waiting."""
    sent, start, shown = 0, time.monotonic(), 0.0
    while True:
        data = f.read(CHUNK)
        if not data:
            return True
        view = memoryview(data)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                return False
            if writable:
                # In pieces, so that an answer is seen soon after it came.
                n = sock.send(view[:SEND_PIECE])
                view, sent = view[n:], sent + n
        if progress and time.monotonic() - shown > 0.5:
            _progress(sent, total, start, progress)
            shown = time.monotonic()


def _connect(address, tls, tls_name):
    sock = socket.create_connection(address, timeout=60)
    if tls is None:
        return sock
    try:
        return tls.wrap_socket(sock, server_hostname=tls_name)
    except (OSError, ssl.SSLError) as e:
        sock.close()
        raise SynthesisFailed(f"TLS with {address[0]}:{address[1]}: {e}")


def synthesize(address, path, forward=(), name=None, progress=sys.stderr,
               timeout=600, tls=None, tls_name=None, early_start=True,
               on_running=None, resume=None):
    """Sends the overlay at @path to the service at (host, port), over
    @tls (an ssl.SSLContext from transport.client_context, checking the
    service's certificate for @tls_name) or plaintext (None); returns its
    result (a dict) with "client-seconds" added, or raises
    SynthesisFailed with the service's reason. An early-start overlay's
    VM runs before its segments are all sent unless @early_start is
    False; @on_running(answer) is called when the service says it runs
    (the answer has its ports), and the result adds
    "client-running-seconds". @resume: the name of an early-start VM
    whose synthesis lost its connection: it goes on, sending only the
    segments the service lacks."""
    _, description = overlay_file.read_info(path)   # refuse our own file
    early = overlay_file.early_start(description)
    total = os.path.getsize(path)
    request = {"name": name or os.path.basename(path),
               "forward": [int(p) for p in forward]}
    if early:
        request["early-start"] = bool(early_start)
    if resume:
        if not early:
            raise SynthesisFailed("only an early-start overlay's synthesis "
                                  "is resumed")
        request = {"op": "resume", "name": resume}
    start = time.monotonic()
    if early:
        return _synthesize_early(address, path, request, tls, tls_name,
                                 timeout, progress, on_running, start)
    with _connect(address, tls, tls_name) as sock, open(path, "rb") as f:
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            complete = _send(sock, f, total, progress)
            # The end of the file is the end of the overlay: a short one
            # is found truncated, not waited for. (Under TLS a half-close
            # would end the session: the service's deadlines end it.)
            if tls is None:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            complete = False            # the answer says why, if any
        if progress:
            if complete:
                _progress(total, total, start, progress)
            progress.write("\n")
        answer = _read_answer(sock, timeout)
    if not answer.get("ok"):
        raise SynthesisFailed(answer.get("error", "refused"))
    answer["client-seconds"] = round(time.monotonic() - start, 3)
    return answer


class _Pushback:
    """A socket whose first byte was read already (to tell a refusal
    line from the layout)."""

    def __init__(self, sock, first):
        self.sock, self.first = sock, first

    def recv(self, n):
        if self.first:
            data, self.first = self.first, b""
            return data
        return self.sock.recv(n)


def _refusal_line(sock, first):
    """The rest of a refusal line whose first byte is @first."""
    data = first
    while not data.endswith(b"\n"):
        part = sock.recv(65536)
        if not part:
            break
        data += part
    try:
        answer = json.loads(data)
    except ValueError:
        raise SynthesisFailed("the service's answer is not JSON") from None
    return answer


class _SegmentSource:
    """The segments of the overlay open as @f, in frames: those asked
    for first, the rest in number order, each once."""

    def __init__(self, f, layout):
        self.f, self.layout = f, layout
        self.sent = bytearray(len(layout.segments))
        self.n_sent = 0
        self.asked = []
        self.order = 0
        self.frame = None

    def want(self, k):
        if not self.sent[k]:
            self.asked.append(k)

    def received(self, ks):
        """What the service has already (a resumed synthesis)."""
        for k in ks:
            if not self.sent[k]:
                self.sent[k] = 1
                self.n_sent += 1

    def next_frame(self):
        while self.asked and self.sent[self.asked[0]]:
            self.asked.pop(0)
        if self.asked:
            k = self.asked.pop(0)
        else:
            while self.order < len(self.sent) and self.sent[self.order]:
                self.order += 1
            if self.order == len(self.sent):
                return None
            k = self.order
        offset, length = self.layout.segments[k]
        self.sent[k] = 1
        self.n_sent += 1
        return memoryview(early_protocol.frame_header(k, length) +
                          os.pread(self.f.fileno(), length, offset))


def _segments(sock, f, layout, timeout, on_running, progress, resumed,
              eager_whole=0):
    """_send_segments, a broken connection told with what to resume."""
    named = {}
    try:
        return _send_segments(sock, f, layout, timeout, on_running,
                              progress, named, resumed, eager_whole)
    except (OSError, ssl.SSLError, early_protocol.ProtocolError) as e:
        vm = named.get("vm")
        again = (f"; VM {vm} waits for its segments: synthesize again with "
                 f"--resume {vm}") if vm else ""
        raise SynthesisFailed(f"the connection to the service broke "
                              f"({e}){again}") from None


def _send_segments(sock, f, layout, timeout, on_running, progress, named,
                   resumed, eager_whole):
    """Sends the segments, answering WANTs first, until the service's
    last note; returns (running note or None, its time, last note).
    @named gets the VM's name once a note gave it. @resumed: nothing is
    sent before the service said what it has (RECEIVED), so no segment
    it holds crosses again. Segments 0 to @eager_whole - 1 went in EAGER
    frames."""
    source = _SegmentSource(f, layout)
    source.received(range(eager_whole))
    reader = early_protocol.MessageReader(len(layout.segments))
    running = running_at = None
    frame = None
    told = not resumed
    last_heard = time.monotonic()
    while True:
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if frame is None and told:
            frame = source.next_frame()
        readable, writable, _ = select.select(
            [sock], [sock] if frame is not None else [], [],
            0 if pending else 1.0)
        if readable or pending:
            data = sock.recv(65536)
            if not data:
                raise SynthesisFailed("the service closed the connection "
                                      "before its last answer")
            last_heard = time.monotonic()
            for kind, value in reader.feed(data):
                if kind == "want":
                    source.want(value)
                elif kind == "received":
                    source.received(value)
                    told = True
                elif "vm" in value and "vm" not in named:
                    named["vm"] = value["vm"]
                if kind != "note":
                    continue
                if value.get("complete") or not value.get("ok"):
                    return running, running_at, value
                elif value.get("state") == "loading":
                    if progress:
                        progress.write(f"synthesize: VM {value['vm']} "
                                       f"loading\n")
                elif running is None:
                    running, running_at = value, time.monotonic()
                    if progress:
                        progress.write(f"synthesize: VM {value['vm']} "
                                       f"{value['state']}, "
                                       f"{source.n_sent} of "
                                       f"{len(source.sent)} segments "
                                       f"sent\n")
                    if on_running:
                        on_running(value)
        elif time.monotonic() - last_heard > timeout and frame is None:
            raise SynthesisFailed(f"no answer from the service for "
                                  f"{timeout} s")
        if writable and frame is not None:
            n = sock.send(frame[:SEND_PIECE])
            frame = frame[n:] if n < len(frame) else None


def _synthesize_early(address, path, request, tls, tls_name, timeout,
                      progress, on_running, start):
    seg_start, size = segments_start(path)
    eager = 0
    with _connect(address, tls, tls_name) as sock, open(path, "rb") as f:
        # At most one segment waits unsent in the kernel: a segment the
        # VM waits for goes next, not behind a full send buffer.
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT,
                        early_feed.SEGMENT_MAX_BYTES)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            if request.get("op") != "resume":
                _send(sock, _Prefix(f, seg_start), seg_start, progress)
                eager = _send_eager(sock, f, seg_start, size, timeout)
        except (BrokenPipeError, ConnectionResetError, TimeoutError,
                ssl.SSLError):
            pass                        # the answer says why, if any
        sock.settimeout(timeout)
        first = sock.recv(1)
        if first in (b"{", b""):
            answer = _refusal_line(sock, first) if first else None
            raise SynthesisFailed((answer or {}).get(
                "error", "the service closed the connection without an "
                "answer"))
        try:
            layout = early_feed.read_layout(_Pushback(sock, first),
                                            seg_start, size)
        except early_feed.FeedError as e:
            raise SynthesisFailed(f"the service's layout of the segments: "
                                  f"{e}") from None
        sock.settimeout(timeout)
        running, running_at, answer = _segments(
            sock, f, layout, timeout, on_running, progress,
            resumed=request.get("op") == "resume",
            eager_whole=layout.whole_in(eager))
    if not answer.get("ok"):
        raise SynthesisFailed(answer.get("error", "refused"))
    answer["client-seconds"] = round(time.monotonic() - start, 3)
    if running_at is not None:
        answer["client-running-seconds"] = round(running_at - start, 3)
    return answer


def _send_eager(sock, f, start, size, timeout):
    """The segments' area of the overlay open as @f, from @start to @size,
    in EAGER frames (early_protocol.py) until the service's answer
    begins: the link carries them while QEMU launches. Returns the bytes
    of the area sent; a service that takes none for @timeout s is left
    to the answer's wait."""
    sent, area = 0, size - start
    sock.settimeout(timeout)
    last = time.monotonic()
    while sent < area:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            break
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            break
        if not writable:
            if time.monotonic() - last > timeout:
                break
            continue
        piece = os.pread(f.fileno(),
                         min(early_feed.SEGMENT_MAX_BYTES, area - sent),
                         start + sent)
        if not piece:
            raise SynthesisFailed(f"the overlay ends {area - sent} bytes "
                                  f"early")
        try:
            sock.sendall(early_protocol.eager_frame(piece))
        except TimeoutError:
            # Part of a frame may have gone: the stream cannot go on.
            raise SynthesisFailed(f"the service took nothing for "
                                  f"{timeout} s while its QEMU "
                                  f"launched") from None
        sent += len(piece)
        last = time.monotonic()
    return sent


class _Prefix:
    """The first @n bytes of file @f, as a file _send reads."""

    def __init__(self, f, n):
        self.f, self.left = f, n

    def read(self, size):
        data = self.f.read(min(size, self.left))
        self.left -= len(data)
        return data


def manage(address, request, tls=None, tls_name=None, timeout=60):
    """Sends one management request (a dict: {"op": "list"}, {"op":
    "stop", "name": NAME}) to the service at (host, port), as synthesize
    connects; returns its answer, or raises SynthesisFailed with the
    service's reason."""
    with _connect(address, tls, tls_name) as sock:
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass                        # the answer says why, if any
        answer = _read_answer(sock, timeout)
    if not answer.get("ok"):
        raise SynthesisFailed(answer.get("error", "refused"))
    return answer
