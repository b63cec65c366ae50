# SPDX-License-Identifier: GPL-2.0-or-later
"""The last step before a VM's QEMU: confinement (docs/synthesis.md).

Run as root by the launcher, as `python3 -I confine.py SPEC -- QEMU ARGS`
(SPEC: JSON, see Confinement.spec() in launcher.py); it ends in QEMU,
same process:

1. it joins the VM's cgroup (if any) and sets the VM's rlimits;
2. it enters a mount namespace of its own whose root is an empty tmpfs
   holding, at their host paths, only what QEMU needs: read-only the
   system's programs and libraries, QEMU, the firmware, the base and the
   directories the operator allows; read-write the VM's own directory;
   a few device nodes. The host's old root is detached;
3. it takes the VM's uid and gid (and no other group), with no way back;
4. it executes QEMU.

Not QEMU's own -runas and -chroot: QEMU drops privileges after it has
installed its seccomp filter, which with elevateprivileges=deny kills it
on setgid() (SIGSYS); and a chroot of QEMU's would hide the base from
the handoff, which reads it while loading, after QEMU's chroot. Here
QEMU never runs as root, and paths stay as they are.

Standard library only, run by path: nothing of the caller's environment
(PYTHONPATH, site) is imported by a process running as root.
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155            # x86_64

RLIMITS = {"nofile": resource.RLIMIT_NOFILE,
           "nproc": resource.RLIMIT_NPROC,
           "core": resource.RLIMIT_CORE}

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source and source.encode(), target.encode(),
                       fstype and fstype.encode(), ctypes.c_ulong(flags),
                       data and data.encode()), f"mount {target}")


def _bind(root, path, writable):
    """@path (a file, directory or symlink of the host) at the same path
    under @root; read-only unless @writable; never setuid, never devices
    unless it is one."""
    target = root + path
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(path) and os.path.dirname(path) == "/":
        os.symlink(os.readlink(path), target)   # /lib -> usr/lib
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        open(target, "a").close()
    # Not recursive: what is mounted below @path stays out of reach.
    _mount(path, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID
    if not path.startswith("/dev/"):
        flags |= MS_NODEV
    if not writable:
        flags |= MS_RDONLY
    _mount(None, target, None, flags)


def enter_root(root, read_only, writable):
    """A mount namespace whose / is @root (an empty directory) holding only
    the paths listed, the host's old root detached."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    # The paths leading to what is bound: traversable by QEMU's uid.
    umask = os.umask(0o022)
    # Nothing mounted here propagates to the host, nor back.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path in read_only:
        if os.path.lexists(path):
            _bind(root, path, False)
    for path in writable:
        _bind(root, path, True)
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.umask(umask)


def drop_privileges(uid, gid):
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError(f"still uid {os.geteuid()}")


def _join_cgroup(path):
    if path:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def _set_rlimits(rlimits):
    for name, value in rlimits.items():
        resource.setrlimit(RLIMITS[name], (value, value))


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: confine.py SPEC -- QEMU ARGS...")
    spec = json.loads(argv[1])
    steps = (("cgroup", lambda: _join_cgroup(spec.get("cgroup"))),
             ("rlimits", lambda: _set_rlimits(spec["rlimits"])),
             ("mount namespace", lambda: enter_root(
                 spec["root"], spec["read_only"], spec["writable"])),
             ("directory", lambda: os.chdir(spec["cwd"])),
             ("uid", lambda: drop_privileges(spec["uid"], spec["gid"])),
             ("exec", lambda: os.execv(argv[3], argv[3:])))
    for step, run in steps:
        try:
            run()
        except OSError as e:
            # QEMU's log, which a client may hear of: no host path.
            print(f"confine: {step}: {e.strerror or 'failed'}",
                  file=sys.stderr)
            if os.environ.get("QEMU_HANDOFF_CONFINE_DEBUG"):
                raise
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
