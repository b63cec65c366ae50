# SPDX-License-Identifier: GPL-2.0-or-later
"""A small synchronous QMP client (stdlib only) for the synthesis service,
scripts and tests.

QEMU's own client (python/qemu/qmp in the fetched tree) is asyncio-based and
tied to that tree's layout; tests need only request/response plus the events
seen on the way, so this stays small.

The synthesis service (root) talks to a QEMU that a stranger's device
state may have compromised, so nothing QEMU sends is let grow without
bound: a line is MAX_LINE bytes at most, the events kept MAX_EVENTS (the
oldest dropped), and a command waits for its answer its timeout in all,
however many events come meanwhile.
"""

import json
import socket
import subprocess
import time

MAX_LINE = 1 << 20
MAX_EVENTS = 1000


class QMPProtocolError(ConnectionError):
    """QEMU sent what QMP is not: a line too long, not a JSON object."""


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command, error):
        self.command = command
        self.error_class = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"{command}: {self.error_class}: {self.desc}")


class QMPClient:
    def __init__(self, path, timeout=30.0):
        self.path = path
        self.events = []
        self._buf = b""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no QMP socket at {path}")
                time.sleep(0.05)
        self._timeout = timeout
        self._sock.settimeout(timeout)
        # An event can come first: QEMU sends events to a QMP monitor that
        # has not handled its connection yet (commands unset, not in
        # negotiation mode), e.g. RESUME when the VM starts as we connect.
        deadline = time.monotonic() + timeout
        greeting = self._read(deadline)
        while "event" in greeting:
            self._event(greeting)
            greeting = self._read(deadline)
        self._sock.settimeout(timeout)
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self, deadline=None):
        """The next message (a JSON object); by @deadline (monotonic)
        if given, else within the socket's timeout for each read."""
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE:
                raise QMPProtocolError(f"QMP {self.path}: a line longer "
                                       f"than {MAX_LINE} bytes")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"QMP {self.path}: no answer in time")
                self._sock.settimeout(left)
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError(f"QMP connection {self.path} closed")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        if len(line) > MAX_LINE:
            raise QMPProtocolError(f"QMP {self.path}: a line longer than "
                                   f"{MAX_LINE} bytes")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise QMPProtocolError(f"QMP {self.path}: not JSON") from None
        if not isinstance(message, dict):
            raise QMPProtocolError(f"QMP {self.path}: not a JSON object")
        return message

    def _event(self, message):
        self.events.append(message)
        del self.events[:-MAX_EVENTS]

    def cmd(self, command, **args):
        """Runs a command and returns its 'return' value; raises QMPError,
        TimeoutError if there is no answer within the client's timeout."""
        return self._cmd(self._timeout, command, args)

    def _cmd(self, seconds, command, args):
        deadline = time.monotonic() + seconds
        msg = {"execute": command}
        if args:
            msg["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        self._sock.settimeout(seconds)
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
            while True:
                resp = self._read(deadline)
                if "event" in resp:
                    self._event(resp)
                elif "error" in resp:
                    error = resp["error"]
                    raise QMPError(command, error if isinstance(error, dict)
                                   else {})
                elif "return" in resp:
                    return resp["return"]
        finally:
            self._sock.settimeout(self._timeout)

    def slow_cmd(self, seconds, command, **args):
        """cmd() for a command QEMU runs to its end before it answers
        (handoff-base-create copies whole images, pmemsave writes all of
        RAM): waits up to @seconds instead of the client's timeout."""
        return self._cmd(seconds, command, args)

    def wait_event(self, name, timeout, match=lambda data: True):
        """The first event @name whose data @match accepts (taken from
        those already received, else waited for): its data."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("event") == name and match(ev.get("data", {})):
                    self.events.remove(ev)
                    return ev.get("data", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout} s")
            try:
                message = self._read(deadline)
                if "event" in message:
                    self._event(message)
            except socket.timeout:
                pass
            finally:
                self._sock.settimeout(self._timeout)

    def hmp(self, command_line):
        return self.cmd("human-monitor-command", command_line=command_line)

    def close(self):
        self._sock.close()

    def cut(self):
        """Wakes a thread blocked on this monitor with an error, from
        another thread (shutdown, not close: the descriptor stays the
        blocked thread's until it closes it)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def end_qemu(qmp, proc, timeout=10):
    """Ends a QEMU process: `quit` through @qmp (which is closed), or
    SIGTERM without one (QEMU quits cleanly on it either way); killed if
    it is still there after @timeout seconds."""
    if qmp:
        try:
            qmp.cmd("quit")
        except (OSError, QMPError, ConnectionError):
            pass
        qmp.close()
    elif proc and proc.poll() is None:
        proc.terminate()
    if proc and proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
