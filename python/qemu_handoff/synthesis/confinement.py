# SPDX-License-Identifier: GPL-2.0-or-later
"""What each VM's QEMU is confined to, on the service's side.

A QEMU the cloudlet launches runs an overlay a stranger sent; if the
guest breaks out of QEMU's device models it should land in a process
that holds nothing of the host (docs/synthesis.md, "Confinement"):

- a uid and gid of its own, from a range the operator gives (UidPool),
  used by no account and no other VM: it owns its directory and its
  images, nothing else;
- a mount namespace that holds only what QEMU needs (confine.py);
- limits: rlimits always (open files, threads, no core dump of guest
  memory), and a cgroup v2 per VM (memory.max, pids.max, cpu.max) when
  the operator delegates one (--cgroup).

confine.py does the work in the child, between fork and QEMU's exec.
"""

import json
import os
import sys
import threading

CONFINE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "confine.py")
DEFAULT_FIRST_UID = 200000
DEFAULT_UIDS = 65536
NOFILE = 1024
THREADS_BASE = 128           # QEMU's own threads (I/O pool: 64), per VM
MEMORY_OVERHEAD = 512 << 20  # QEMU's own memory above the guest's RAM
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin",
               "/etc/ld.so.cache", "/etc/localtime")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random",
           "/dev/urandom", "/dev/kvm")


class ConfinementError(Exception):
    """No uid is free, or the cgroup cannot be used."""


def _ids(path):
    """The ids (third field) of /etc/passwd or /etc/group."""
    try:
        with open(path) as f:
            return {int(ln.split(":")[2]) for ln in f
                    if ln.count(":") >= 3 and ln.split(":")[2].isdigit()}
    except OSError:
        return set()


def _process_uids():
    """Every uid a process runs as (real, effective, saved, filesystem:
    the Uid line of /proc/PID/status; /proc/PID's owner is the effective
    uid only)."""
    uids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uids.update(int(u) for u in line.split()[1:])
                        break
        except (OSError, ValueError):
            continue
    return uids


class UidPool:
    """Uids (each its own gid too) for VMs: [@first, @first + @count),
    except ids of accounts or groups, of running processes and of files
    in @workdir (a VM's, left behind): no VM ever shares one."""

    def __init__(self, first=DEFAULT_FIRST_UID, count=DEFAULT_UIDS,
                 workdir=None):
        self.first, self.count, self.workdir = first, count, workdir
        self._held = set()
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            used = (self._held | _ids("/etc/passwd") | _ids("/etc/group")
                    | _process_uids())
            if self.workdir and os.path.isdir(self.workdir):
                for name in os.listdir(self.workdir):
                    try:
                        used.add(os.lstat(os.path.join(self.workdir,
                                                       name)).st_uid)
                    except OSError:
                        continue
            for uid in range(self.first, self.first + self.count):
                if uid not in used:
                    self._held.add(uid)
                    return uid
        raise ConfinementError(f"no free uid in {self.first}.."
                               f"{self.first + self.count - 1}")

    def give_back(self, uid):
        with self._lock:
            self._held.discard(uid)


def _subordinate(path):
    """The ranges of /etc/subuid or /etc/subgid: (owner, first, count)."""
    try:
        with open(path) as f:
            fields = [ln.strip().split(":") for ln in f]
    except OSError:
        return []
    return [(n, int(a), int(c)) for n, a, c in
            (x for x in fields if len(x) == 3) if a.isdigit() and c.isdigit()]


def check_range(first, count):
    """Refuses a range that holds root or an account's or group's id, or
    overlaps a user's subordinate ids (its containers' uids)."""
    ids = range(first, first + count)
    taken = sorted((_ids("/etc/passwd") | _ids("/etc/group")) & set(ids))
    if first <= 0 or count <= 0 or taken:
        raise ConfinementError(
            f"uid range {first}..{first + count - 1} is not for VMs: "
            f"{'it holds id ' + str(taken[0]) if taken else 'empty or root'}"
            f" (pick ids no account or group uses)")
    for path in ("/etc/subuid", "/etc/subgid"):
        for owner, start, n in _subordinate(path):
            if start < first + count and first < start + n:
                raise ConfinementError(
                    f"uid range {first}..{first + count - 1} is not for "
                    f"VMs: it overlaps {owner}'s subordinate ids in {path}")


class Cgroup:
    """A cgroup v2 directory the operator delegated to the service: each
    VM gets a child NAME with its memory, pids and cpu limits."""

    CONTROLLERS = ("memory", "pids", "cpu")

    def __init__(self, path):
        self.path = path
        try:
            with open(os.path.join(path, "cgroup.controllers")) as f:
                have = f.read().split()
            missing = [c for c in self.CONTROLLERS if c not in have]
            if missing:
                raise ConfinementError(
                    f"cgroup {path} lacks the {', '.join(missing)} "
                    f"controller(s) (enable them in its parent's "
                    f"cgroup.subtree_control)")
            with open(os.path.join(path, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join(f"+{c}" for c in self.CONTROLLERS))
        except OSError as e:
            raise ConfinementError(f"cgroup {path}: {e}") from None

    def create(self, name, ram_bytes, cpus):
        child = os.path.join(self.path, name)
        os.mkdir(child)
        for key, value in (("memory.max", ram_bytes + MEMORY_OVERHEAD),
                           ("memory.swap.max", 0),
                           ("pids.max", THREADS_BASE + cpus),
                           ("cpu.max", f"{cpus * 100000} 100000")):
            if key == "memory.swap.max" and not os.path.exists(
                    os.path.join(child, key)):
                continue                # no swap accounting
            with open(os.path.join(child, key), "w") as f:
                f.write(str(value))
        return child

    @staticmethod
    def remove(child):
        try:
            os.rmdir(child)
        except OSError:
            pass


def confined_command(args, uid, workdir, read_only, cpus, cgroup=None):
    """@args (QEMU's command line) run through confine.py: as @uid (and
    gid), seeing @read_only (host paths) and @workdir (writable)."""
    root = os.path.join(workdir, ".root")
    if not os.path.isdir(root):         # made by an earlier attempt
        os.mkdir(root, 0o700)
    qemu = os.path.realpath(args[0])
    spec = {
        "uid": uid, "gid": uid, "cwd": workdir, "root": root,
        "cgroup": cgroup,
        "rlimits": {"nofile": NOFILE, "nproc": THREADS_BASE + cpus,
                    "core": 0},
        "read_only": sorted({*SYSTEM_DIRS, *DEVICES, os.path.dirname(qemu),
                             *(os.path.realpath(p) for p in read_only)}),
        "writable": [workdir]}
    return [sys.executable, "-I", "-S", CONFINE, json.dumps(spec), "--",
            qemu, *args[1:]]
