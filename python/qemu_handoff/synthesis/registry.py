# SPDX-License-Identifier: GPL-2.0-or-later
"""The synthesis service's VMs, as records that outlive the service.

A VM the service launched runs on when the service ends (as a domain
outlives libvirtd). Each VM's record, vm.json in its directory, says whose
it is and how to find its QEMU again: owner, name, pid and the pid's
start time (so that a pid the kernel gave to another process since is
not taken for the VM), forwarded ports, QMP socket. A restarted service
reads them back: a VM still running is its owner's again (quota, list,
stop); the record of one that is gone is removed.

Records are written whole or not at all (a file of its own, 0600,
O_EXCL, renamed over the old one) in the service's own directory.
"""

import json
import os
import re
import shutil
import signal
import time

from .port_relay import PortRelay

RECORD = "vm.json"
LOADING = "loading"     # a VM's state until its stream is in and checked
STOP_TIMEOUT_S = 10


def start_time(pid):
    """The start time of process @pid (clock ticks after boot, field 22
    of /proc/PID/stat), or None if there is no such process or only its
    zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _is_vm(pid, started, name):
    """Whether @pid is still the QEMU of VM @name started at @started."""
    if start_time(pid) != started:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"\0-name\0{name}\0".encode() in f.read()
    except OSError:
        return False


def write_atomic(path, text):
    """@text as file @path (0600), whole or not at all."""
    part = path + ".part"
    try:
        os.unlink(part)             # left by a service that died writing
    except FileNotFoundError:
        pass
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, path)


class VMRecord:
    """One VM of the service: launched by this process (@vm, its
    LaunchedVM) or found again after a restart (vm None)."""

    FIELDS = ("owner", "name", "pid", "started", "state", "address",
              "ports", "loopback", "qmp", "workdir")

    def __init__(self, owner, name, pid, started, state, address, ports,
                 loopback, qmp, workdir, vm=None):
        self.owner, self.name, self.pid, self.started = (owner, name, pid,
                                                         started)
        self.state, self.address = state, address
        self.ports, self.loopback = ports, loopback    # guest port -> port
        self.qmp, self.workdir = qmp, workdir
        self.vm = vm
        self.relays = []

    @classmethod
    def of(cls, owner, vm, state, address):
        """The record of @vm, just launched and running (or paused)."""
        loopback = ({g: r.target for g, r in zip(vm.ports, vm.relays)}
                    if vm.relays else dict(vm.ports))
        return cls(owner, vm.name, vm.proc.pid, start_time(vm.proc.pid),
                   state, address, dict(vm.ports), loopback, vm.qmp_path,
                   vm.workdir, vm=vm)

    @property
    def path(self):
        return os.path.join(self.workdir, RECORD)

    def save(self):
        doc = {k: getattr(self, k) for k in self.FIELDS}
        for key in ("ports", "loopback"):
            doc[key] = {str(g): p for g, p in doc[key].items()}
        write_atomic(self.path, json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, workdir):
        """The record in VM directory @workdir; ValueError if it is not
        one this service wrote."""
        with open(os.path.join(workdir, RECORD)) as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or set(doc) != set(cls.FIELDS):
            raise ValueError("not a VM record")
        ports = {}
        for key in ("ports", "loopback"):
            value = doc[key]
            if not isinstance(value, dict) or not all(
                    re.fullmatch(r"\d{1,5}", g) and type(p) is int
                    for g, p in value.items()):
                raise ValueError(f"its {key} are not ports")
            ports[key] = {int(g): p for g, p in value.items()}
        if (not all(isinstance(doc[k], str) for k in
                    ("owner", "name", "state", "address", "qmp")) or
                type(doc["pid"]) is not int or
                type(doc["started"]) is not int or
                doc["name"] != os.path.basename(workdir)):
            raise ValueError("its fields are not a VM's")
        doc.update(ports, workdir=workdir)
        return cls(**doc)

    def alive(self):
        if self.vm is not None:
            return self.vm.proc.poll() is None
        return _is_vm(self.pid, self.started, self.name)

    def public(self):
        """What its owner is told: no host path."""
        return {"vm": self.name, "state": self.state,
                "address": self.address,
                "ports": {str(g): p for g, p in self.ports.items()}}

    def restore_relays(self, log):
        """A restarted service's relays to this VM's ports on a public
        address, on the ports they had if still free, else on new ones
        (which list then tells)."""
        if self.address == "127.0.0.1" or not self.ports:
            return
        for guest, public in list(self.ports.items()):
            try:
                relay = PortRelay(self.address, self.loopback[guest], public)
            except OSError as e:
                relay = PortRelay(self.address, self.loopback[guest])
                log(f"VM {self.name}: port {public} on {self.address} "
                    f"taken ({e}): guest port {guest} now on {relay.port}")
            self.ports[guest] = relay.port
            self.relays.append(relay)
        self.save()

    def stop(self):
        """Ends the VM's QEMU (SIGTERM: it quits cleanly; killed after
        STOP_TIMEOUT_S) and removes its record; its files stay."""
        if self.vm is not None:
            self.vm.stop()
        else:
            self._signal_until_gone()
        for relay in self.relays:
            relay.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _signal_until_gone(self):
        # Through a pidfd, taken before the check: the check then speaks
        # for the process the signal goes to, even if the pid is reused.
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if not _is_vm(self.pid, self.started, self.name):
                return
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while start_time(self.pid) == self.started:
                if time.monotonic() > deadline:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    deadline = float("inf")
                time.sleep(0.05)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)


def scan(workdir, log):
    """The VMs recorded under @workdir that still run; the records of
    those that do not are removed (their files are left to the
    operator)."""
    found = []
    try:
        entries = sorted(os.scandir(workdir), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or not os.path.exists(
                os.path.join(entry.path, RECORD)):
            continue
        try:
            record = VMRecord.load(entry.path)
        except (OSError, ValueError) as e:
            log(f"{entry.path}/{RECORD}: ignored, {e}")
            continue
        if record.alive() and record.state == LOADING:
            # Its service ended before the stream was all in and checked.
            record.stop()
            shutil.rmtree(record.workdir, ignore_errors=True)
            log(f"VM {record.name} of {record.owner} was still loading: "
                f"stopped, its files removed")
        elif record.alive():
            log(f"found VM {record.name} of {record.owner} (pid "
                f"{record.pid}, files in {record.workdir})")
            found.append(record)
        else:
            log(f"VM {record.name} of {record.owner} no longer runs: its "
                f"record removed, its files left in {record.workdir}")
            os.unlink(record.path)
    return found
