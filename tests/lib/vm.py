# SPDX-License-Identifier: GPL-2.0-or-later
"""Real QEMU processes running the test guest, for tests and the demo.

A GuestVM is one qemu-system-x86_64 process of the fork (TCG), with its QMP
socket, its serial console in a file, and its own qcow2 overlay on the
shared raw base disk.
"""

import hashlib
import os
import re
import shlex
import socket
import subprocess
import time

from qmp import QMPClient

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("QEMU_HANDOFF_BUILD", os.path.join(TOP, "build"))
QEMU = os.path.join(BUILD, "qemu", "qemu-system-x86_64")
QEMU_IMG = os.path.join(BUILD, "qemu", "qemu-img")
GUEST = os.path.join(BUILD, "guest")
FIRMWARE_DIRS = ["/usr/share/seabios", "/usr/lib/ipxe/qemu", "/usr/share/qemu"]

GUEST_MEM_MIB = 256


def guest_facts():
    """Reads build/guest/guest.env (written by scripts/build-test-guest.sh)."""
    path = os.path.join(GUEST, "guest.env")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: run scripts/build-test-guest.sh first")
    facts = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            parsed = shlex.split(value)
            facts[key] = parsed[0] if parsed else ""
    return facts


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_img(*args):
    return subprocess.run([QEMU_IMG, *args], check=True, capture_output=True,
                          text=True).stdout


def create_overlay(path):
    """A fresh qcow2 overlay on the guest's raw base disk."""
    base = os.path.join(GUEST, "base-disk.raw")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", path)
    return path


class GuestVM:
    """One QEMU process of the fork running the test guest."""

    def __init__(self, name, workdir, disk, workload="none", incoming=None,
                 extra_args=(), disk_interface="virtio", gdb=False):
        self.name = name
        self.workdir = workdir
        self.disk = disk
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.serial_path = os.path.join(workdir, f"{name}.serial")
        self.console_path = os.path.join(workdir, f"{name}.console")
        self.log_path = os.path.join(workdir, f"{name}.log")
        facts = guest_facts()
        append = f"{facts['GUEST_APPEND']} handoff.workload={workload}"
        self.args = [
            QEMU, "-name", name, "-accel", "tcg", "-machine", "pc",
            "-m", str(GUEST_MEM_MIB), "-smp", "1", "-nodefaults",
            "-display", "none", "-no-user-config",
            "-kernel", facts["GUEST_KERNEL"], "-initrd", facts["GUEST_INITRD"],
            "-append", append,
            "-drive", f"file={disk},format=qcow2,if={disk_interface},"
                      "cache=writeback",
            # The console is a socket (tests type commands into the guest)
            # whose output is also logged to a file (tests read that).
            "-chardev", f"socket,id=console,path={self.console_path},"
                        f"server=on,wait=off,logfile={self.serial_path}",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        for d in FIRMWARE_DIRS:
            self.args += ["-L", d]
        if incoming:
            self.args += ["-incoming", incoming, "-S"]
        # A gdbstub lets tests write guest memory (QMP cannot).
        self.gdb_path = os.path.join(workdir, f"{name}.gdb") if gdb else None
        if gdb:
            self.args += ["-gdb", f"unix:{self.gdb_path},server=on,wait=off"]
        self.args += list(extra_args)
        self.proc = None
        self.qmp = None

    def start(self):
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self.qmp = QMPClient(self.qmp_path)
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.name}: QEMU did not start: "
                               f"{self.read_log()}")
        return self

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def serial(self):
        if not os.path.exists(self.serial_path):
            return ""
        with open(self.serial_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_serial(self, pattern, timeout=60.0):
        """Waits for a regex on the serial console; returns the match."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = regex.search(self.serial())
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: QEMU exited "
                                   f"({self.proc.returncode}): {self.read_log()}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no /{pattern}/ on the serial console "
                           f"after {timeout:.0f} s; console tail:\n"
                           f"{self.serial()[-2000:]}")

    def console_command(self, line):
        """Types a line on the guest's serial console (see tests/guest).

        The connection is closed at once: a connected client that does not
        read would stall the guest's console output (and the guest with it)
        once the socket buffer fills; the log file gets everything anyway.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.console_path)
            s.sendall(line.encode() + b"\n")
            # Let QEMU read the line before the hang-up.
            time.sleep(0.2)

    def heartbeats(self):
        """Heartbeat counters printed so far, complete lines only."""
        return [int(n) for n in re.findall(r"^heartbeat (\d+)\r?$",
                                           self.serial(), re.M)]

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def wait_migration(self, timeout=300.0):
        """Polls query-migrate until it ends; returns the last answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.qmp.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: migration still running after "
                           f"{timeout:.0f} s: {info}")

    def wait_incoming(self, timeout=300.0):
        """On a destination: waits until the incoming migration has been
        loaded entirely (the source may finish sending well before)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.qmp.cmd("query-migrate")
            if info.get("status") in ("completed", "failed"):
                return info
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: QEMU exited "
                                   f"({self.proc.returncode}): "
                                   f"{self.read_log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: incoming migration still running "
                           f"after {timeout:.0f} s")

    def ram_digest(self):
        """SHA-256 of the guest's RAM, read with pmemsave while paused."""
        dump = os.path.join(self.workdir, f"{self.name}.ram")
        self.qmp.cmd("pmemsave", val=0, size=GUEST_MEM_MIB << 20,
                     filename=dump)
        h = hashlib.sha256()
        with open(dump, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest(), dump

    def stop(self):
        if self.qmp:
            try:
                self.qmp.cmd("quit")
            except Exception:
                pass
            self.qmp.close()
            self.qmp = None
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()
