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

from .paths import BUILD, FIRMWARE_DIRS
from .qmp import QMPClient, end_qemu
from .synthesis.launcher import free_port

QEMU = os.path.join(BUILD, "qemu", "qemu-system-x86_64")
QEMU_IMG = os.path.join(BUILD, "qemu", "qemu-img")
QEMU_IO = os.path.join(BUILD, "qemu", "qemu-io")
GUEST = os.path.join(BUILD, "guest")

GUEST_MEM_MIB = 256
# vCPUs of every test VM (a base and the VMs resumed from it agree):
# scripts/soak-races.sh runs the racing tests with 1 and 2.
SMP = os.environ.get("QEMU_HANDOFF_SMP", "1")
EDGE = os.path.join(BUILD, "edge")


def _read_env(path, hint):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run {hint} first")
    facts = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            parsed = shlex.split(value)
            facts[key] = " ".join(parsed)
    return facts


def guest_facts():
    """Reads build/guest/guest.env (written by scripts/build-test-guest.sh)."""
    return _read_env(os.path.join(GUEST, "guest.env"),
                     "scripts/build-test-guest.sh")


class GuestImage:
    """What a VM boots: kernel, initramfs, command line, memory size, the
    raw base disk its overlays sit on, and whether it has a NIC (QEMU user
    networking, `restrict=on` unless a VM asks for the host)."""

    def __init__(self, name, kernel, initrd, append, mem_mib, base_disk,
                 nic=False):
        self.name = name
        self.kernel = kernel
        self.initrd = initrd
        self.append = append
        self.mem_mib = mem_mib
        self.base_disk = base_disk
        self.nic = nic


def test_guest():
    """The CI-size busybox guest (tests/guest)."""
    facts = guest_facts()
    return GuestImage("test", facts["GUEST_KERNEL"], facts["GUEST_INITRD"],
                      facts["GUEST_APPEND"], GUEST_MEM_MIB,
                      os.path.join(GUEST, "base-disk.raw"))


def edge_guest():
    """The Debian edge guest of the benchmarks (tests/edge-guest), booted
    with the test guest's kernel and initramfs."""
    facts = guest_facts()
    edge = _read_env(os.path.join(EDGE, "edge.env"),
                     "scripts/build-edge-guest.sh")
    return GuestImage("edge", facts["GUEST_KERNEL"], facts["GUEST_INITRD"],
                      edge["EDGE_APPEND"], int(edge["EDGE_MEM_MIB"]),
                      edge["EDGE_DISK"], nic=True)


def free_tcp_port():
    """A TCP port free on loopback now (launcher.free_port: one helper)."""
    return free_port("127.0.0.1")


def qemu_img(*args):
    return subprocess.run([QEMU_IMG, *args], check=True, capture_output=True,
                          text=True).stdout


def create_overlay(path, guest=None):
    """A fresh qcow2 overlay on a guest's raw base disk."""
    base = (guest or test_guest()).base_disk
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", path)
    return path


class GuestVM:
    """One QEMU process of the fork running the test guest."""

    def __init__(self, name, workdir, disk, workload="none", incoming=None,
                 extra_args=(), disk_interface="virtio", gdb=False,
                 guest=None, host_access=False, discard="unmap"):
        """@host_access: the guest may reach the host's loopback as 10.0.2.2
        (QEMU user networking without restrict), e.g. for a package
        repository; otherwise a NIC, if the guest has one, reaches nothing."""
        self.name = name
        self.workdir = workdir
        self.disk = disk
        self.guest = guest or test_guest()
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.serial_path = os.path.join(workdir, f"{name}.serial")
        self.console_path = os.path.join(workdir, f"{name}.console")
        self.log_path = os.path.join(workdir, f"{name}.log")
        append = f"{self.guest.append} handoff.workload={workload}"
        self.args = [
            QEMU, "-name", name, "-accel", "tcg", "-machine", "pc",
            "-m", str(self.guest.mem_mib), "-smp", SMP, "-nodefaults",
            "-display", "none", "-no-user-config",
            "-kernel", self.guest.kernel, "-initrd", self.guest.initrd,
            "-append", append,
            # discard=unmap, as docs/usage.md recommends: the guest's TRIMs
            # reach the overlay, and the handoff sends them as zero runs.
            "-drive", f"file={disk},format=qcow2,if={disk_interface},"
                      f"cache=writeback,discard={discard}",
            # The console is a socket (tests type commands into the guest)
            # whose output is also logged to a file (tests read that).
            "-chardev", f"socket,id=console,path={self.console_path},"
                        f"server=on,wait=off,logfile={self.serial_path}",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]
        if self.guest.nic:
            restrict = "off" if host_access else "on"
            self.args += ["-netdev", f"user,id=net0,restrict={restrict}",
                          "-device", "virtio-net-pci,netdev=net0,romfile="]
        for d in FIRMWARE_DIRS:
            self.args += ["-L", d]
        if incoming:
            self.args += ["-incoming", incoming, "-S"]
        # A gdbstub lets tests write guest memory (QMP cannot).
        self.gdb_path = os.path.join(workdir, f"{name}.gdb") if gdb else None
        if gdb:
            self.args += ["-gdb", f"unix:{self.gdb_path},server=on,wait=off"]
        self.args += list(extra_args)
        # For debugging any test or benchmark, e.g. with trace events:
        # QEMU_HANDOFF_QEMU_ARGS="-msg timestamp=on -trace enable=handoff_*"
        self.args += shlex.split(os.environ.get("QEMU_HANDOFF_QEMU_ARGS", ""))
        self.proc = None
        self.qmp = None
        self.pass_fds = ()      # open fds QEMU's arguments name

    def start(self):
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     pass_fds=self.pass_fds)
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

    def shell(self, command, timeout=120.0, check=True):
        """Runs a shell command in the guest (tests/guest/init "sh") and
        returns its output, the heartbeats and other console lines printed
        meanwhile left out. @check: a non-zero exit raises."""
        self._shell_tag = getattr(self, "_shell_tag", 0) + 1
        tag = f"t{self._shell_tag}"
        start = len(self.serial())
        self.console_command(f"sh {tag} {command}")
        m = self.wait_serial(rf"^handoff-guest: sh {tag} exit (\d+)\r?$",
                             timeout=timeout)
        output = "\n".join(
            line for line in self.serial()[start:m.start()].splitlines()
            if not re.match(r"^heartbeat \d+\r?$", line))
        if check and int(m.group(1)) != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited "
                               f"{m.group(1)}: {output}")
        return output

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
        self.qmp.slow_cmd(600, "pmemsave", val=0,
                          size=self.guest.mem_mib << 20,
                          filename=dump)
        h = hashlib.sha256()
        with open(dump, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest(), dump

    def stop(self):
        if self.qmp or self.proc:
            end_qemu(self.qmp, self.proc)
        self.qmp = None
        if getattr(self, "_log", None):
            self._log.close()
