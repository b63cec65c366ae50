# SPDX-License-Identifier: GPL-2.0-or-later
"""Reads and writes guest-physical memory through QEMU's gdbstub.

QMP can read guest memory (pmemsave) but not write it. Tests use this to
plant a one-byte corruption in a VM and prove that their identity checks see
it. QEMU's `Qqemu.PhyMemMode` switches the stub's m/M packets from virtual to
physical addresses, so no knowledge of the guest's page tables is needed.
Attaching stops the VM; closing the connection does not resume it.
"""

import socket


class GDBStub:
    def __init__(self, path, timeout=10.0):
        """path: the unix socket QEMU serves with -gdb unix:PATH,server=on"""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(path)
        self._buf = b""
        if self._request("Qqemu.PhyMemMode:1") != "OK":
            raise RuntimeError("gdbstub refused physical memory mode")

    def _request(self, payload):
        data = payload.encode()
        checksum = sum(data) & 0xFF
        self._sock.sendall(b"$" + data + b"#" + b"%02x" % checksum)
        while True:
            reply = self._reply()
            # Attaching stops a running VM, and the stub says so ("T05...")
            # on its own; no answer to m/M/Q starts with T or S.
            if not reply.startswith(("T", "S")):
                return reply

    def _reply(self):
        # Skip acks ('+') and wait for one complete '$...#xx' packet.
        while True:
            start = self._buf.find(b"$")
            end = self._buf.find(b"#", start)
            if start >= 0 and end >= 0 and len(self._buf) >= end + 3:
                body = self._buf[start + 1:end].decode()
                self._buf = self._buf[end + 3:]
                self._sock.sendall(b"+")
                return body
            data = self._sock.recv(4096)
            if not data:
                raise ConnectionError("gdbstub closed the connection")
            self._buf += data

    def read(self, addr, length):
        reply = self._request(f"m{addr:x},{length:x}")
        if reply.startswith("E"):
            raise RuntimeError(f"gdbstub read at {addr:#x}: {reply}")
        return bytes.fromhex(reply)

    def write(self, addr, data):
        reply = self._request(f"M{addr:x},{len(data):x}:{data.hex()}")
        if reply != "OK":
            raise RuntimeError(f"gdbstub write at {addr:#x}: {reply}")

    def close(self):
        self._sock.close()
