# SPDX-License-Identifier: GPL-2.0-or-later
"""Launching a VM from an overlay's description at a cloudlet.

The description says what the saved VM's machine and devices are, as
data (see docs/overlay-format.md); machine_args.py turns it into QEMU
options through its allowlist. Here the cloudlet adds its own: each disk
the overlay carries gets a fresh image (an overlay on the base's disk, or
an empty image of the disk's size), the first serial port a console of
ours, the user-mode NIC the forwarded ports, and QEMU waits for the stream
(-incoming defer), its VM paused (-S) until everything has been checked.
Confined (with a UidPool): its own uid, a mount namespace, limits
(confinement.py).
"""

import os
import re
import shutil
import socket
import stat
import subprocess
import time

from .confinement import confined_command
from .machine_args import Limits, check_disks, machine_args
from .port_relay import PortRelay
from .registry import remove_entry
from ..qmp import QMPClient, QMPError, end_qemu

from ..paths import FIRMWARE_DIRS, TOP

# Every QEMU the cloudlet launches for an overlay runs under QEMU's
# seccomp filter (the fork is built with it, as Debian's QEMU is): no
# obsolete system calls, no setuid, no fork or exec, no changing of its
# scheduling or resources. A guest that breaks out of the device models
# lands in a process that can do little more than QEMU's work. (So QEMU
# cannot drop privileges itself, -runas: confine.py does it before exec.)
SANDBOX = ("-sandbox", "on,obsolete=deny,elevateprivileges=deny,"
                       "spawn=deny,resourcecontrol=deny")

# A base's boot files (kernel, initrd, firmware), named in descriptions.
BOOT_DIR = "boot"
DEFAULT_QEMU = os.path.join(TOP, "build", "qemu", "qemu-system-x86_64")
# A forwarded port is picked free, closed, and bound by QEMU a moment
# later: another process may take it meanwhile. QEMU then fails at once,
# saying so, and is started again on other ports.
PORT_RACE = "Could not set up host forwarding rule"
PORT_ATTEMPTS = 3


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


def make_disks(description, base_dir, workdir, qemu, owner=None):
    """A fresh image per disk the overlay carries: region -> path; each
    the VM's uid's alone (@owner: uid, gid), if confined."""
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
        if owner:
            os.chown(path, *owner)
            os.chmod(path, 0o600)
        disks[region] = path
    return disks


def qemu_failure(log_path):
    """Why QEMU failed, in its own words (its log at @log_path): the
    handoff's lines if any, else its last ones."""
    try:
        with open(log_path, errors="replace") as f:
            return _causes(f.read())
    except OSError:
        return _causes("")


def _causes(text):
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if "handoff:" in ln] or lines[-3:]
    return "; ".join(causes) or "no message"


def check_machine(description, base_dir, forwards=(), limits=None):
    """Raises OverlayError naming what @description asks that this
    cloudlet does not run: checked with placeholder images and ports, so
    nothing is made (and no bulk data read) for a refused one."""
    machine_args(description, limits or Limits(),
                 os.path.join(base_dir, BOOT_DIR),
                 dict.fromkeys(check_disks(description), "-"),
                 forwards={int(p): 1 for p in forwards})


class LaunchedVM:
    """One QEMU process at the cloudlet, loading or running an overlay."""

    def __init__(self, name, workdir, description, base_dir, qemu=None,
                 forwards=(), address="127.0.0.1", accel=None,
                 extra_args=(), overlay=None, limits=None, uids=None,
                 cgroup=None, verified_id=None, early_feed=None):
        """@overlay: a local overlay file QEMU reads itself (-handoff
        overlay=); otherwise QEMU waits for the stream on stream_path.
        @early_feed: with @overlay, an early start whose segments are
        still being written into it, announced on this socket (an fd,
        passed to QEMU: -handoff ...,feed-fd=).
        @limits: what the VM may have (machine_args.Limits). Raises
        OverlayError naming what the description asks that is not
        allowed, before anything is made.
        @uids: the UidPool QEMU's uid comes from (None: not confined);
        @cgroup: the confinement.Cgroup the VM gets a child of.
        @verified_id: the base's content ID, if the caller verified the
        base itself (QEMU then skips its own re-hash: -handoff
        verified-id)."""
        base_dir = os.path.realpath(base_dir)
        self.limits = limits or Limits()
        self.verified_id = verified_id
        check_machine(description, base_dir, forwards, self.limits)
        # What the VM's mount namespace holds of the host: the base (its
        # boot/ files included) and the firmware, read-only.
        self.host_dirs = [base_dir, *FIRMWARE_DIRS]
        self.name = name
        self.workdir = workdir
        self.description = description
        self.qemu = qemu or DEFAULT_QEMU
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        self.console_path = os.path.join(workdir, "console.sock")
        self.serial_path = os.path.join(workdir, "serial.log")
        self.log_path = os.path.join(workdir, "qemu.log")
        self.stream_path = os.path.join(workdir, "stream.sock")
        self.uids, self.uid = uids, uids.take() if uids else None
        self.cgroup, self.cgroup_dir = cgroup, None
        self.proc = self.qmp = self._log = self.overlay_fd = None
        self.early_feed, self.uffd_fd = early_feed, None
        self.relays = []
        try:
            self._prepare(description, base_dir, forwards, address,
                          accel, extra_args, overlay)
        except BaseException:
            if self.uids:
                self.uids.give_back(self.uid)
            self._close_fds()
            raise

    def _prepare(self, description, base_dir, forwards, address,
                 accel, extra_args, overlay):
        workdir = self.workdir
        if self.uid is not None:
            # The VM's directory is its uid's; nothing else of the host.
            os.chown(workdir, self.uid, self.uid)
            os.chmod(workdir, 0o700)
        # QEMU forwards from loopback; other addresses go through a relay
        # (port_relay.py says why). ports: guest port -> public port.
        self.forwards = [int(p) for p in forwards]
        self.address = address
        self.disks = make_disks(description, base_dir, workdir, self.qemu,
                                None if self.uid is None
                                else (self.uid, self.uid))
        self.accel = accel or description["machine"]["accel"]
        self.extra_args = list(extra_args)
        self.base_dir = base_dir
        self.overlay = overlay and os.path.realpath(overlay)
        # A confined QEMU is given the local overlay open (QEMU's fd set
        # 1, /dev/fdset/1): the file needs to be readable by us, not by
        # the VM's uid, and is not in its mount namespace.
        self.overlay_fd = os.open(self.overlay, os.O_RDONLY | os.O_CLOEXEC) \
            if overlay and self.uid is not None else None
        # Early start registers RAM with userfaultfd: a confined QEMU
        # gets the right from /dev/userfaultfd passed open (its fd set
        # 2), not from a host-wide sysctl (docs/synthesis.md).
        if self.early_feed is not None and self.uid is not None:
            self.uffd_fd = os.open("/dev/userfaultfd",
                                   os.O_RDWR | os.O_CLOEXEC)
        self.args = self._command()

    def _command(self):
        """QEMU's command line, on newly picked loopback ports."""
        loopback = {p: free_port("127.0.0.1") for p in self.forwards}
        if self.address == "127.0.0.1":
            self.ports = loopback
        else:
            if not self.relays:
                self.relays = [PortRelay(self.address, p)
                               for p in loopback.values()]
            for relay, port in zip(self.relays, loopback.values()):
                relay.target = port
            self.ports = dict(zip(loopback, (r.port for r in self.relays)))
        workdir = self.workdir
        firmware = [a for d in FIRMWARE_DIRS for a in ("-L", d)]
        args = [
            self.qemu, "-name", self.name, "-accel", self.accel,
            "-display", "none", "-no-user-config", *SANDBOX, *firmware,
            *machine_args(self.description, self.limits,
                          os.path.join(self.base_dir, BOOT_DIR), self.disks,
                          forwards=loopback),
            "-chardev", f"socket,id=console,path={self.console_path},"
                        f"server=on,wait=off,logfile={self.serial_path}",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
            "-S", *(a.replace("{workdir}", workdir)
                    for a in self.extra_args)]
        handoff = f"base={_escape(self.base_dir)}"
        if self.verified_id:
            handoff += f",verified-id={self.verified_id}"
        if self.early_feed is not None:
            handoff += f",early-start=on,feed-fd={self.early_feed}"
        if self.uffd_fd is not None:
            args += ["-add-fd", f"fd={self.uffd_fd},set=2"]
            handoff += ",userfaultfd=/dev/fdset/2"
        if self.overlay_fd is not None:
            return args + ["-add-fd", f"fd={self.overlay_fd},set=1",
                           "-handoff", f"{handoff},overlay=/dev/fdset/1"]
        if self.overlay:
            return args + ["-handoff",
                           f"{handoff},overlay={_escape(self.overlay)}"]
        return args + ["-handoff", handoff, "-incoming", "defer"]

    def start(self):
        """Starts QEMU and has it listen for the stream on stream_path."""
        try:
            for attempt in range(PORT_ATTEMPTS):
                if attempt:
                    self.args = self._command()
                try:
                    self._start()
                    break
                except LaunchError:
                    if attempt + 1 == PORT_ATTEMPTS or \
                            PORT_RACE not in self.failure():
                        raise
                    self._end()
        finally:
            if self.uids:
                # From now on its process and its files hold the uid.
                self.uids.give_back(self.uid)
        return self

    def _start(self):
        command = self.args
        if self.uid is not None:
            machine = self.description["machine"]
            ram, cpus = machine["ram-bytes"], machine["max-cpus"]
            if self.cgroup and not self.cgroup_dir:
                self.cgroup_dir = self.cgroup.create(self.name, ram, cpus)
            command = confined_command(
                self.args, self.uid, self.workdir,
                self.host_dirs, cpus, self.cgroup_dir)
        # The log is read through our own descriptor: the directory is
        # QEMU's, which could put a link to a host file in its place.
        if self._log:
            self._log.close()
        self._log = open(self.log_path, "w+", opener=lambda p, f: os.open(
            p, f | os.O_NOFOLLOW, 0o600))
        # A session of its own: the VM outlives a service ended by a
        # signal to its process group (Ctrl-C).
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
            pass_fds=[fd for fd in (self.overlay_fd, self.early_feed,
                                    self.uffd_fd) if fd is not None])
        try:
            wait_for_monitor(self.proc, self.qmp_path, 120)
            self.qmp = QMPClient(self.qmp_path, timeout=120)
            if not self.overlay:
                self.qmp.cmd("migrate-incoming",
                             uri=f"unix:{self.stream_path}")
        except (OSError, TimeoutError, QMPError, RuntimeError,
                LaunchError) as e:
            self._end()
            raise LaunchError(f"QEMU did not start ({e}): "
                              f"{self.failure()}") from None

    def failure(self):
        if not self._log or self._log.closed:
            return "no message"
        return _causes(os.pread(self._log.fileno(), 1 << 20, 0).decode(
            errors="replace"))

    def loaded(self):
        """Whether QEMU loaded the whole stream; LaunchError with QEMU's
        reason if it refused it or ended."""
        if self.proc.poll() is not None:
            raise LaunchError(f"QEMU exited while loading: "
                              f"{self.failure()}")
        try:
            status = self.qmp.cmd("query-migrate").get("status")
        except (OSError, QMPError, ConnectionError):
            status = None
        if status == "failed":
            raise LaunchError(f"QEMU refused the stream: {self.failure()}")
        return status == "completed"

    def wait_loaded(self, timeout=600):
        """Waits until QEMU loaded the whole stream; raises LaunchError
        with QEMU's reason if it refused it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.loaded():
                return
            time.sleep(0.02)
        raise LaunchError(f"stream not loaded after {timeout} s")

    def run(self, timeout=None):
        """cont, its answer waited for @timeout seconds (None: the
        monitor's usual timeout)."""
        if timeout is None:
            self.qmp.cmd("cont")
        else:
            self.qmp.slow_cmd(timeout, "cont")

    def release_monitor(self):
        """Hands the QMP socket over: QEMU serves one client at a time,
        and the VM's owner (an operator, a test) may want it."""
        if self.qmp:
            self.qmp.close()
            self.qmp = None

    def _end(self):
        end_qemu(self.qmp, self.proc)
        self.qmp = None
        # The next attempt waits for its own. Whatever QEMU left in its
        # place (a directory, a link: not followed) goes.
        remove_entry(self.workdir, os.path.basename(self.qmp_path))

    def stop(self, remove_files=False):
        self._end()
        for relay in self.relays:
            relay.close()
        if self.cgroup_dir:
            self.cgroup.remove(self.cgroup_dir)
        if self._log:
            self._log.close()
        self._close_fds()
        if remove_files:
            shutil.rmtree(self.workdir, ignore_errors=True)


    def _close_fds(self):
        for fd in (self.overlay_fd, self.uffd_fd):
            if fd is not None:
                os.close(fd)
        self.overlay_fd = self.uffd_fd = None


def wait_for_monitor(proc, path, timeout):
    """Until QEMU (@proc) accepts on its QMP socket @path. It makes the
    socket early and may still fail on a later option (a drive, a
    forwarded port taken) and exit, the socket left behind: so its end is
    watched meanwhile, not only the socket (a QMP client would wait its
    whole timeout). Raises RuntimeError if QEMU exited, TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError("QEMU exited")
        if time.monotonic() > deadline:
            raise TimeoutError("no QMP monitor")
        # A socket QEMU listens on (the file, QEMU's, might be anything).
        if stat.S_ISSOCK(_mode(path)):
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(path)
                    return
                except OSError:
                    pass
        time.sleep(0.02)


def _mode(path):
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0
