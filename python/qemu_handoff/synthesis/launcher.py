# SPDX-License-Identifier: GPL-2.0-or-later
"""Launching a VM from an overlay's description at a cloudlet.

The description says what the saved VM's machine and devices are, as
data (see docs/overlay-format.md); machine_args.py turns it into QEMU
options through its allowlist. Here the cloudlet adds its own: each disk
the overlay carries gets a fresh image (an overlay on the base's disk, or
an empty image of the disk's size), the first serial port a console of
ours, the user-mode NIC the forwarded ports, and QEMU waits for the stream
(-incoming defer), its VM paused (-S) until everything has been checked.
"""

import os
import re
import shutil
import socket
import subprocess
import time

from .machine_args import Limits, machine_args
from .port_relay import PortRelay
from ..qmp import QMPClient, QMPError, end_qemu

from ..paths import FIRMWARE_DIRS, TOP

# Every QEMU the cloudlet launches for an overlay runs under QEMU's
# seccomp filter (the fork is built with it, as Debian's QEMU is): no
# obsolete system calls, no setuid, no fork or exec, no changing of its
# scheduling or resources. A guest that breaks out of the device models
# lands in a process that can do little more than QEMU's work.
SANDBOX = ("-sandbox", "on,obsolete=deny,elevateprivileges=deny,"
                       "spawn=deny,resourcecontrol=deny")

# A base's boot files (kernel, initrd, firmware), named in descriptions.
BOOT_DIR = "boot"
DEFAULT_QEMU = os.path.join(TOP, "build", "qemu", "qemu-system-x86_64")


class LaunchError(Exception):
    """The VM could not be launched, with the reason."""


def free_port(address):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _escape(value):
    """A value inside QEMU's comma-separated option syntax."""
    return value.replace(",", ",,")


def _qemu_img(qemu):
    return os.path.join(os.path.dirname(qemu), "qemu-img")


def make_disks(description, base_dir, workdir, qemu):
    """A fresh image per disk the overlay carries: region -> path."""
    disks = {}
    for disk in description.get("disks", []):
        region = disk["region"]
        path = os.path.join(workdir, re.sub(r"[^\w.-]", "_", region)
                            + ".qcow2")
        if disk.get("base"):
            cmd = ["create", "-q", "-f", "qcow2", "-b",
                   os.path.join(base_dir, "disk.raw"), "-F", "raw", path]
        else:
            cmd = ["create", "-q", "-f", "qcow2", path, str(disk["bytes"])]
        run = subprocess.run([_qemu_img(qemu), *cmd], capture_output=True,
                             text=True)
        if run.returncode:
            raise LaunchError(f"cannot create the image of disk {region}: "
                              f"{run.stderr.strip()}")
        disks[region] = path
    return disks


def qemu_failure(log_path):
    """Why QEMU failed, in its own words (its log at @log_path): the
    handoff's lines if any, else its last ones."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        lines = []
    causes = [ln for ln in lines if "handoff:" in ln] or lines[-3:]
    return "; ".join(causes) or "no message"


def check_machine(description, base_dir, forwards=(), limits=None):
    """Raises OverlayError naming what @description asks that this
    cloudlet does not run: checked with placeholder images and ports, so
    nothing is made (and no bulk data read) for a refused one."""
    machine_args(description, limits or Limits(),
                 os.path.join(base_dir, BOOT_DIR),
                 {d["region"]: "-" for d in description["disks"]},
                 forwards={int(p): 1 for p in forwards})


class LaunchedVM:
    """One QEMU process at the cloudlet, loading or running an overlay."""

    def __init__(self, name, workdir, description, base_dir, qemu=None,
                 forwards=(), address="127.0.0.1", accel=None,
                 extra_args=(), overlay=None, limits=None):
        """@overlay: a local overlay file QEMU reads itself (-handoff
        overlay=); otherwise QEMU waits for the stream on stream_path.
        @limits: what the VM may have (machine_args.Limits). Raises
        OverlayError naming what the description asks that is not
        allowed, before anything is made."""
        base_dir = os.path.abspath(base_dir)
        limits = limits or Limits()
        boot_dir = os.path.join(base_dir, BOOT_DIR)
        check_machine(description, base_dir, forwards, limits)
        self.name = name
        self.workdir = workdir
        self.qemu = qemu or DEFAULT_QEMU
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self.console_path = os.path.join(workdir, "console.sock")
        self.serial_path = os.path.join(workdir, "serial.log")
        self.log_path = os.path.join(workdir, "qemu.log")
        self.stream_path = os.path.join(workdir, "stream.sock")
        # QEMU forwards from loopback; other addresses go through a relay
        # (port_relay.py says why). ports: guest port -> public port.
        loopback = {int(p): free_port("127.0.0.1") for p in forwards}
        self.relays = [] if address == "127.0.0.1" else [
            PortRelay(address, p) for p in loopback.values()]
        self.ports = dict(zip(loopback, (r.port for r in self.relays))) \
            if self.relays else loopback
        self.disks = make_disks(description, base_dir, workdir, self.qemu)
        accel = accel or description["machine"]["accel"]
        firmware = [a for d in FIRMWARE_DIRS for a in ("-L", d)]
        self.args = [
            self.qemu, "-name", name, "-accel", accel, "-display", "none",
            "-no-user-config", *SANDBOX, *firmware,
            *machine_args(description, limits, boot_dir, self.disks,
                          forwards=loopback),
            "-chardev", f"socket,id=console,path={self.console_path},"
                        f"server=on,wait=off,logfile={self.serial_path}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-S", *(a.replace("{workdir}", workdir) for a in extra_args)]
        if overlay:
            self.args += ["-handoff", f"base={_escape(base_dir)},"
                                      f"overlay={_escape(overlay)}"]
        else:
            self.args += ["-handoff", f"base={_escape(base_dir)}",
                          "-incoming", "defer"]
        self.overlay = overlay
        self.proc = None
        self.qmp = None

    def start(self):
        """Starts QEMU and has it listen for the stream on stream_path."""
        with open(self.log_path, "w") as log:
            # A session of its own: the VM outlives a service ended by a
            # signal to its process group (Ctrl-C).
            self.proc = subprocess.Popen(self.args, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            self._wait_for_monitor(120)
            self.qmp = QMPClient(self.qmp_path, timeout=120)
            if not self.overlay:
                self.qmp.cmd("migrate-incoming",
                             uri=f"unix:{self.stream_path}")
        except (OSError, TimeoutError, QMPError, RuntimeError,
                LaunchError) as e:
            self.stop()
            raise LaunchError(f"QEMU did not start ({e}): "
                              f"{self.failure()}") from None
        return self

    def _wait_for_monitor(self, timeout):
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.qmp_path):
            if self.proc.poll() is not None:
                raise LaunchError("QEMU exited")
            if time.monotonic() > deadline:
                raise LaunchError("no QMP monitor")
            time.sleep(0.02)

    def failure(self):
        return qemu_failure(self.log_path)

    def wait_loaded(self, timeout=600):
        """Waits until QEMU loaded the whole stream; raises LaunchError
        with QEMU's reason if it refused it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LaunchError(f"QEMU exited while loading: "
                                  f"{self.failure()}")
            try:
                status = self.qmp.cmd("query-migrate").get("status")
            except (OSError, QMPError, ConnectionError):
                status = None
            if status == "completed":
                return
            if status == "failed":
                raise LaunchError(f"QEMU refused the stream: "
                                  f"{self.failure()}")
            time.sleep(0.02)
        raise LaunchError(f"stream not loaded after {timeout} s")

    def run(self):
        self.qmp.cmd("cont")

    def release_monitor(self):
        """Hands the QMP socket over: QEMU serves one client at a time,
        and the VM's owner (an operator, a test) may want it."""
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def stop(self, remove_files=False):
        end_qemu(self.qmp, self.proc)
        self.qmp = None
        for relay in self.relays:
            relay.close()
        if remove_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
