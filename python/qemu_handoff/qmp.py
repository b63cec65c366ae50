# SPDX-License-Identifier: GPL-2.0-or-later
"""A small synchronous QMP client (stdlib only) for the synthesis service,
scripts and tests.

QEMU's own client (python/qemu/qmp in the fetched tree) is asyncio-based and
tied to that tree's layout; tests need only request/response plus the events
seen on the way, so this stays small.
"""

import json
import socket
import subprocess
import time


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
        greeting = self._read()
        while "event" in greeting:
            self.events.append(greeting)
            greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self._buf:
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError(f"QMP connection {self.path} closed")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, command, **args):
        """Runs a command and returns its 'return' value; raises QMPError."""
        msg = {"execute": command}
        if args:
            msg["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            resp = self._read()
            if "event" in resp:
                self.events.append(resp)
            elif "error" in resp:
                raise QMPError(command, resp["error"])
            elif "return" in resp:
                return resp["return"]

    def slow_cmd(self, seconds, command, **args):
        """cmd() for a command QEMU runs to its end before it answers
        (handoff-base-create copies whole images, pmemsave writes all of
        RAM): waits up to @seconds instead of the client's timeout."""
        self._sock.settimeout(seconds)
        try:
            return self.cmd(command, **args)
        finally:
            self._sock.settimeout(self._timeout)

    def wait_event(self, name, timeout, match=lambda data: True):
        """The first event @name whose data @match accepts (taken from
        those already received, else waited for): its data."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name and match(ev.get("data", {})):
                    self.events.remove(ev)
                    return ev.get("data", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout} s")
            self._sock.settimeout(left)
            try:
                self.events.append(self._read())
            except socket.timeout:
                pass
            finally:
                self._sock.settimeout(self._timeout)

    def hmp(self, command_line):
        return self.cmd("human-monitor-command", command_line=command_line)

    def close(self):
        self._sock.close()


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
