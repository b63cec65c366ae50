# SPDX-License-Identifier: GPL-2.0-or-later
"""Bases and VMs for handoff tests, the demo and the benchmarks.

The life of a VM on a cloudlet: a base is saved once from a booted guest
(handoff-base-create); user VMs start from it (-handoff base=DIR,resume=on)
on their own overlay of the base's disk, run a workload, and are handed off
to another QEMU that holds the same base (-incoming ... -handoff base=DIR).
"""

import os
import re
import shutil
import subprocess
import time

from .guest import QEMU_IMG, GuestVM, create_overlay, free_tcp_port


# The guest agent's port, driven by QEMU (-device handoff-agent): a VM with
# it, and every VM resumed from or handed off to it, has the same devices.
AGENT_DEVICES = ("-device", "virtio-serial-pci,id=vser0",
                 "-device", "handoff-agent,bus=vser0.0")
# A guest without the agent's port but with virtio-balloon's free page
# hinting, which QEMU's balloon drives from the precopy notifiers.
BALLOON_DEVICES = ("-object", "iothread,id=balloon-io",
                   "-device", "virtio-balloon-pci,id=balloon0,"
                              "free-page-hint=on,iothread=balloon-io")
# On a source: the trace lines sent_free_ranges() and free_ranges() read.
FREE_RUN_TRACE = ("-trace", "handoff_save_free_run",
                  "-trace", "handoff_save_free_final")
_FREE_RUN = re.compile(r"handoff_save_free_run (\S+): 0x([0-9a-f]+)"
                       r"\+0x([0-9a-f]+) free")
_FREE_FINAL = re.compile(r"handoff_save_free_final (\S+): 0x([0-9a-f]+)"
                         r"\+0x([0-9a-f]+) went last as free")


def _ranges(regex, vm):
    """Guest-physical ranges of @regex's trace lines. RAM below 4 GiB (all
    of the test guest's) sits at its own address."""
    ranges = []
    for block, offset, size in regex.findall(vm.read_log()):
        assert block == "pc.ram", block
        ranges.append((int(offset, 16), int(offset, 16) + int(size, 16)))
    return ranges


def sent_free_ranges(vm):
    """What a source (started with FREE_RUN_TRACE) sent as free, in any
    round: their sizes add up to its free-memory statistic."""
    return _ranges(_FREE_RUN, vm)


def free_ranges(vm):
    """Where the destination may hold zeros for the source's stale bytes:
    what a source (started with FREE_RUN_TRACE, its handoff complete) sent
    last as free. A page sent as free and written afterwards went again
    as data, is not among them, and must be identical."""
    return _ranges(_FREE_FINAL, vm)


def mem_free(vm):
    """The guest's MemFree, in bytes."""
    out = vm.shell("grep MemFree /proc/meminfo")
    return int(re.search(r"MemFree:\s+(\d+) kB", out).group(1)) * 1024


def overlay_on(base_dir, path):
    """A fresh qcow2 overlay on a base's disk."""
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b",
                    os.path.join(base_dir, "disk.raw"), "-F", "raw", path],
                   check=True, capture_output=True)
    return path


def create_base(workdir, base_dir, guest=None, disk_interface="virtio",
                extra_args=()):
    """Boots a guest (default: the test guest), lets it settle and saves it
    as a base. VMs started from it need the same @disk_interface and
    devices (@extra_args)."""
    os.makedirs(workdir, exist_ok=True)
    disk = create_overlay(os.path.join(workdir, "base-vm.qcow2"), guest)
    vm = GuestVM("base-vm", workdir, disk, guest=guest,
                 disk_interface=disk_interface,
                 extra_args=extra_args).start()
    try:
        save_base(vm, base_dir)
    finally:
        vm.stop()
    return base_dir


def save_base(vm, base_dir):
    """Saves @vm, booting the test guest, as a base once it has settled."""
    vm.wait_serial(r"handoff-guest: ready", timeout=300)
    vm.wait_serial(r"^heartbeat 2\r?$", timeout=30)
    vm.qmp.slow_cmd(1800, "handoff-base-create", dir=str(base_dir))
    add_boot_files(base_dir, vm.guest)


def add_boot_files(base_dir, guest):
    """The files a VM of this base boots from (kernel, initramfs), in the
    base's boot/ directory: a cloudlet launches an overlay's VM with the
    files of the names its description gives, from there only
    (docs/synthesis.md, "Bases")."""
    boot = os.path.join(base_dir, "boot")
    os.makedirs(boot, exist_ok=True)
    for path in (guest.kernel, guest.initrd):
        shutil.copyfile(path, os.path.join(boot, os.path.basename(path)))


def start_from_base(name, workdir, base_dir, extra_args=(), guest=None,
                    host_access=False, **vm_options):
    """A user VM resumed from the base, on a fresh overlay. @vm_options:
    GuestVM's (disk_interface, discard)."""
    disk = overlay_on(base_dir, os.path.join(workdir, f"{name}.qcow2"))
    vm = GuestVM(name, workdir, disk,
                 extra_args=["-handoff", f"base={base_dir},resume=on",
                             *extra_args], guest=guest,
                 host_access=host_access, **vm_options)
    return vm.start()


def start_destination(name, workdir, base_dir, port=None, extra_args=(),
                      wrap=None, gdb=True, handoff=True, guest=None,
                      **vm_options):
    """A QEMU waiting on 127.0.0.1:port, with its own overlay on the base's
    disk: for a handoff, or with handoff=False for a stock migration.
    @wrap prefixes the command (e.g. to run it in a network namespace)."""
    port = port or free_tcp_port()
    disk = overlay_on(base_dir, os.path.join(workdir, f"{name}.qcow2"))
    if handoff:
        extra_args = ["-handoff", f"base={base_dir}", *extra_args]
    vm = GuestVM(name, workdir, disk, incoming=f"tcp:127.0.0.1:{port}",
                 extra_args=extra_args, gdb=gdb, guest=guest, **vm_options)
    if wrap:
        vm.args = [*wrap, *vm.args]
    vm.port = port
    return vm.start()


def run_workload(vm, name, timeout=300):
    vm.console_command(f"run {name}")
    vm.wait_serial(rf"handoff-guest: workload {name} done", timeout=timeout)


def wait_heartbeat_after(vm, count, timeout=30):
    """Waits until the guest has printed `count` more heartbeats."""
    start = len(vm.heartbeats())
    deadline = time.monotonic() + timeout
    while len(vm.heartbeats()) < start + count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{vm.name}: heartbeats stopped")
        time.sleep(0.1)
