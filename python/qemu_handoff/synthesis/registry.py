# SPDX-License-Identifier: GPL-2.0-or-later
"""The synthesis service's VMs, as records that outlive the service.

A VM the service launched runs on when the service ends (as a domain
outlives libvirtd). Each VM's record says whose it is and how to find its
QEMU again: owner, name, pid, the pid's start time and the VM's uid (so
that a pid the kernel gave to another process since is not taken for the
VM), forwarded ports. A restarted service reads them back: a VM still
running is its owner's again (quota, list, stop); the record of one that
is gone is removed.

The records are the service's alone: one file per VM, RECORDS/NAME.json
(RECORDS = WORKDIR/.records, 0700, root's), never in the VM's own
directory, which is the VM's uid's and so a compromised QEMU's to fill
with anything (links, FIFOs, directories, huge files). A record is
written whole or not at all (0600, O_EXCL, O_NOFOLLOW, renamed over the
old one) and read back as a stranger's file would be: a regular file of
ours, 64 KiB at most, every field checked; one that is not is logged and
skipped, never stopping the service's start.
"""

import errno
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import time

from .port_relay import PortRelay

RECORDS = ".records"
LEGACY_RECORD = "vm.json"   # an earlier release's, in the VM's directory
LOADING = "loading"     # a VM's state until its stream is in and checked
STATES = (LOADING, "running", "paused")
STOP_TIMEOUT_S = 10
RECORD_MAX = 64 << 10
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
OWNER_MAX = 256
MAX_PORTS = 64


class RecordError(ValueError):
    """A record file that is not one this service wrote."""


def start_time(pid):
    """The start time of process @pid (clock ticks after boot, field 22
    of /proc/PID/stat), or None if there is no such process or only its
    zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat_line = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses.
    fields = stat_line[stat_line.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_uid(pid):
    """The real uid of process @pid (/proc/PID/status), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _is_vm(pid, started, uid):
    """Whether @pid is still the QEMU started at @started as @uid: what
    the process cannot change (its command line it can)."""
    return start_time(pid) == started and process_uid(pid) == uid


def open_records(workdir, create=False):
    """A descriptor of @workdir's record directory, checked to be ours
    alone (a directory, not a link, owned by us, 0700); @create: made if
    missing. FileNotFoundError if it is not there."""
    path = os.path.join(workdir, RECORDS)
    if create:
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                 os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise RecordError(f"{path} is not this service's alone (owner "
                          f"{st.st_uid}, mode {st.st_mode & 0o777:o})")
    return fd


def write_atomic(dir_fd, name, text):
    """@text as file @name (0600) in directory @dir_fd, whole or not at
    all."""
    part = name + ".part"
    try:
        os.unlink(part, dir_fd=dir_fd)  # left by a service that died writing
    except FileNotFoundError:
        pass
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def read_bounded(dir_fd, name, limit=RECORD_MAX):
    """File @name of directory @dir_fd, if it is a regular file of ours
    of at most @limit bytes (never a link followed, never a FIFO waited
    on); RecordError if not."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK |
                 os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RecordError("not a regular file")
        if st.st_uid != os.geteuid():
            raise RecordError(f"owned by uid {st.st_uid}, not this service")
        if st.st_size > limit:
            raise RecordError(f"{st.st_size} bytes, more than {limit}")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise RecordError(f"more than {limit} bytes")
        return data
    finally:
        os.close(fd)


def remove_entry(directory, name):
    """Removes @name from @directory whatever it is now (a file, a
    socket, a link: not followed; a directory: its tree), relative to
    the directory's descriptor; nothing if it is not there."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY |
                         os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.EISDIR, errno.EPERM):
                raise
            shutil.rmtree(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _ports(doc, key):
    value = doc[key]
    if not isinstance(value, dict) or len(value) > MAX_PORTS:
        raise RecordError(f"its {key} are not ports")
    ports = {}
    for guest, port in value.items():
        if not (re.fullmatch(r"[1-9]\d{0,4}", guest) and
                int(guest) <= 65535 and type(port) is int and
                1 <= port <= 65535):
            raise RecordError(f"its {key} are not ports")
        ports[int(guest)] = port
    return ports


class VMRecord:
    """One VM of the service: launched by this process (@vm, its
    LaunchedVM) or found again after a restart (vm None). @workdir: the
    VM's directory, WORKDIR/NAME; its record is WORKDIR/.records/NAME.json.
    @uid: the uid its QEMU runs as."""

    FIELDS = ("owner", "name", "pid", "started", "uid", "state", "address",
              "ports", "loopback")

    def __init__(self, owner, name, pid, started, uid, state, address,
                 ports, loopback, workdir, vm=None):
        self.owner, self.name, self.pid, self.started = (owner, name, pid,
                                                         started)
        self.uid, self.state, self.address = uid, state, address
        self.ports, self.loopback = ports, loopback    # guest port -> port
        self.workdir = workdir
        self.vm = vm
        self.relays = []

    @classmethod
    def of(cls, owner, vm, state, address):
        """The record of @vm, just launched and running (or paused)."""
        loopback = ({g: r.target for g, r in zip(vm.ports, vm.relays)}
                    if vm.relays else dict(vm.ports))
        return cls(owner, vm.name, vm.proc.pid, start_time(vm.proc.pid),
                   vm.uid if vm.uid is not None else os.geteuid(),
                   state, address, dict(vm.ports), loopback, vm.workdir,
                   vm=vm)

    @property
    def service_workdir(self):
        return os.path.dirname(self.workdir)

    @property
    def file(self):
        return self.name + ".json"

    def save(self):
        doc = {k: getattr(self, k) for k in self.FIELDS}
        for key in ("ports", "loopback"):
            doc[key] = {str(g): p for g, p in doc[key].items()}
        fd = open_records(self.service_workdir, create=True)
        try:
            write_atomic(fd, self.file, json.dumps(doc, indent=1) + "\n")
        finally:
            os.close(fd)

    @classmethod
    def load(cls, workdir, name, dir_fd=None):
        """The record of VM @name of the service's @workdir; RecordError
        if it is not one this service wrote."""
        fd = open_records(workdir) if dir_fd is None else dir_fd
        try:
            raw = read_bounded(fd, name + ".json")
        finally:
            if dir_fd is None:
                os.close(fd)
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError):
            raise RecordError("not JSON") from None
        if not isinstance(doc, dict) or set(doc) != set(cls.FIELDS):
            raise RecordError("not a VM record")
        owner = doc["owner"]
        if not isinstance(owner, str) or not 0 < len(owner) <= OWNER_MAX:
            raise RecordError("its owner is not a client's name")
        if not isinstance(doc["name"], str) or doc["name"] != name or \
                not NAME.fullmatch(name):
            raise RecordError("its name is not its file's")
        for key in ("pid", "started", "uid"):
            if type(doc[key]) is not int or doc[key] < (key == "pid"):
                raise RecordError(f"its {key} is not one")
        if doc["state"] not in STATES:
            raise RecordError("its state is not a VM's")
        try:
            ipaddress.ip_address(doc["address"])
        except (TypeError, ValueError):
            raise RecordError("its address is not an address") from None
        ports, loopback = _ports(doc, "ports"), _ports(doc, "loopback")
        if set(ports) != set(loopback):
            raise RecordError("its ports and loopback differ")
        return cls(owner, name, doc["pid"], doc["started"], doc["uid"],
                   doc["state"], doc["address"], ports, loopback,
                   os.path.join(workdir, name))

    def alive(self):
        if self.vm is not None:
            return self.vm.proc.poll() is None
        return _is_vm(self.pid, self.started, self.uid)

    def public(self):
        """What its owner is told: no host path."""
        return {"vm": self.name, "state": self.state,
                "address": self.address,
                "ports": {str(g): p for g, p in self.ports.items()}}

    def restore_relays(self, log, address):
        """A restarted service's relays to this VM's ports on its public
        @address (--forward-address), on the ports they had if still
        free, else on new ones (which list then tells). A record of
        another address gets none."""
        if not self.ports or address == "127.0.0.1" == self.address:
            return
        if self.address != address:
            log(f"VM {self.name}: recorded with ports on {self.address}, "
                f"not on this service's {address}: its ports not relayed")
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
        self.forget()

    def forget(self):
        """Removes the record."""
        try:
            fd = open_records(self.service_workdir)
        except FileNotFoundError:
            return
        try:
            os.unlink(self.file, dir_fd=fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def _signal_until_gone(self):
        # Through a pidfd, taken before the check: the check then speaks
        # for the process the signal goes to, even if the pid is reused.
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return
        try:
            if not _is_vm(self.pid, self.started, self.uid):
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
    operator). A record that is not one this service wrote is logged
    and left alone."""
    found = []
    try:
        fd = open_records(workdir)
    except FileNotFoundError:
        fd = None
    except (OSError, RecordError) as e:
        log(f"{workdir}/{RECORDS}: ignored, {e}")
        fd = None
    try:
        _legacy(workdir, log)
        names = sorted(os.listdir(fd)) if fd is not None else []
        for entry in names:
            if not entry.endswith(".json"):
                continue
            try:
                record = VMRecord.load(workdir, entry[:-len(".json")], fd)
                _found(record, log, found)
            except Exception as e:      # one bad record stops no start
                log(f"{workdir}/{RECORDS}/{entry}: ignored, "
                    f"{type(e).__name__}: {e}")
    finally:
        if fd is not None:
            os.close(fd)
    return found


def _found(record, log, found):
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
        record.forget()


def _legacy(workdir, log):
    """Says which VM directories hold an earlier release's record, which
    the VM's uid could have written: not read."""
    try:
        entries = list(os.scandir(workdir))
    except OSError:
        return
    for entry in entries:
        if entry.name != RECORDS and os.path.lexists(
                os.path.join(entry.path, LEGACY_RECORD)):
            log(f"{entry.path}/{LEGACY_RECORD}: an earlier release's "
                f"record, in the VM's own directory: not trusted, its VM "
                f"(if it runs) not adopted; stop it by hand")
