# SPDX-License-Identifier: GPL-2.0-or-later
"""The client side of a synthesis: sends an overlay to a cloudlet's
synthesis service and returns its answer; lists and stops the client's
VMs there.

The answer can come before the overlay is all sent (a refusal: unknown
base, too large, busy), so the socket is watched for it while sending.
"""

import json
import os
import select
import socket
import ssl
import sys
import time

from ..formats import overlay as overlay_file

CHUNK = 1 << 20
SEND_PIECE = 64 << 10


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
               timeout=600, tls=None, tls_name=None):
    """Sends the overlay at @path to the service at (host, port), over
    @tls (an ssl.SSLContext from transport.client_context, checking the
    service's certificate for @tls_name) or plaintext (None); returns its
    result (a dict) with "client-seconds" added, or raises
    SynthesisFailed with the service's reason."""
    overlay_file.read_info(path)                # refuse our own bad file
    total = os.path.getsize(path)
    request = {"name": name or os.path.basename(path),
               "forward": [int(p) for p in forward]}
    start = time.monotonic()
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
