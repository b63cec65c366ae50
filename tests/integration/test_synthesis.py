# SPDX-License-Identifier: GPL-2.0-or-later
"""VM synthesis end to end: an overlay saved from one QEMU becomes the same
VM, running, in another.

A user VM resumed from the base runs a workload and is saved as an overlay
(handoff-overlay-save) while paused; its RAM dump, disk and last heartbeat
are what every synthesized VM must match. The overlay is launched by QEMU
itself (-handoff base=DIR,overlay=FILE) and through the synthesis service
(scripts/handoff-synthesis.py serve / synthesize), on loopback and over
the emulated WAN; damaged, foreign and oversized overlays and excess
clients are refused with nothing launched.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from handoff_env import (create_base, overlay_on, run_workload,
                         start_from_base)
from identity import assert_goes_on, assert_same_disk, assert_same_ram
from qmp import QMPClient
import vm as vm_lib  # noqa: E402
from vm import GUEST, TOP, GuestVM, free_tcp_port
from wan import WanLink

sys.path.insert(0, os.path.join(TOP, "scripts"))
from synthesis import overlay_file  # noqa: E402

SYNTHESIS = os.path.join(TOP, "scripts", "handoff-synthesis.py")


@pytest.fixture(scope="module")
def base(module_tmp):
    work = module_tmp / "base"
    return create_base(str(work), str(work / "base"))


class Saved:
    """An overlay and the VM it was saved from (paused at the save)."""

    def __init__(self, path, disk, ram_dump, last_beat):
        self.path = path
        self.disk = disk
        self.ram_dump = ram_dump
        self.last_beat = last_beat


def save_overlay(vm, path, **args):
    vm.qmp.cmd("handoff-overlay-save", path=str(path), **args)
    info = vm.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    return info


@pytest.fixture(scope="module")
def saved(module_tmp, base):
    work = module_tmp / "saved"
    work.mkdir()
    src = start_from_base("src", str(work), base)
    try:
        run_workload(src, "mixed")
        src.wait_serial(r"^heartbeat \d+\r?$")
        src.qmp.cmd("stop")
        path = work / "vm.overlay"
        info = save_overlay(src, path)
        assert info["handoff"]["output-bytes"] > 0
        assert not os.path.exists(f"{path}.part")
        assert src.status() == "postmigrate"
        # The save gave back the capabilities and compression it changed.
        caps = {c["capability"]: c["state"]
                for c in src.qmp.cmd("query-migrate-capabilities")}
        assert not caps["handoff"] and not caps["return-path"]
        params = src.qmp.cmd("query-migrate-parameters")
        assert params["handoff-compression"] == "auto"
        _, dump = src.ram_digest()
        return Saved(str(path), src.disk, dump, max(src.heartbeats()))
    finally:
        src.stop()


def assert_is_saved_vm(saved, vm):
    """@vm (loaded, paused, with a gdbstub) is the VM @saved came from, and
    goes on from where it was saved once resumed."""
    assert vm.status() == "paused"
    vm.qmp.cmd("stop")                  # flushes its disk
    assert_same_disk(saved.disk, vm.disk)
    assert_same_ram(saved.ram_dump, vm)
    vm.qmp.cmd("cont")
    assert_goes_on(vm, saved.last_beat)


# --- the file ----------------------------------------------------------------

def test_overlay_file_layout_and_description(saved, base):
    """The file is laid out as docs/overlay-format.md says (read here with
    the service's reader), and describes the VM without host details."""
    header, description = overlay_file.read_info(saved.path)
    size = os.path.getsize(saved.path)
    assert size == (overlay_file.HEADER_BYTES + header.description_bytes
                    + header.stream_bytes)
    with open(saved.path, "rb") as f:
        f.seek(overlay_file.HEADER_BYTES)
        assert hashlib.sha256(f.read()).digest() == header.digest

    with open(os.path.join(base, "base.json")) as f:
        assert description["base"]["id"] == json.load(f)["id"]
    machine = description["machine"]
    assert machine["type"].startswith("pc-i440fx")
    assert machine["ram-bytes"] == 256 << 20 and machine["cpus"] == 1
    assert description["disks"] == [{"region": "disk", "drive": "virtio0",
                                      "bytes": description["disks"][0]
                                      ["bytes"], "base": True}]
    args = description["args"]
    assert "@serial" in args
    assert any(a.startswith("file=@disk:disk,") for a in args), args
    for host_only in ("-qmp", "-chardev", "-gdb", "-handoff", "-name",
                      "-display", "-accel"):
        assert host_only not in args
    assert description["compression"] == "lzma-6"
    assert description["created"]["tool"].startswith("qemu-handoff 0.4.0")


def test_cancelled_save_leaves_nothing(tmp_path, base, vms):
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    src.wait_serial(r"^heartbeat \d+\r?$")
    path = tmp_path / "cancelled.overlay"
    # lzma-9 over the whole modified state takes seconds: time to cancel.
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=1 << 20)
    src.qmp.cmd("handoff-overlay-save", path=str(path), compression="lzma-9")
    src.qmp.cmd("migrate_cancel")
    assert src.wait_migration()["status"] == "cancelled"
    assert not path.exists() and not os.path.exists(f"{path}.part")
    assert src.status() == "running"
    caps = {c["capability"]: c["state"]
            for c in src.qmp.cmd("query-migrate-capabilities")}
    assert not caps["handoff"] and not caps["return-path"]


# --- QEMU launches it: -handoff base=DIR,overlay=FILE ----------------------

def qemu_with_overlay(tmp_path, base, overlay, name="dst", mem_mib=None):
    """A QEMU given the VM's machine options and -handoff overlay=, not
    started yet."""
    disk = overlay_on(base, str(tmp_path / f"{name}.qcow2"))
    vm = GuestVM(name, str(tmp_path), disk, gdb=True,
                 extra_args=["-S", "-handoff", f"base={base},overlay={overlay}"])
    if mem_mib:
        vm.args[vm.args.index("-m") + 1] = str(mem_mib)
    return vm


def test_qemu_launches_overlay_identical(tmp_path, saved, base, vms):
    dst = qemu_with_overlay(tmp_path, base, saved.path).start()
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    assert_is_saved_vm(saved, dst)


def qemu_refusal(tmp_path, base, overlay, **kw):
    """Runs a QEMU on @overlay that must refuse it: returns its stderr."""
    vm = qemu_with_overlay(tmp_path, base, overlay, name="refused", **kw)
    run = subprocess.run(vm.args, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode != 0
    assert "heartbeat" not in vm.serial(), "the VM ran"
    return run.stderr


def damaged_copy(saved, tmp_path, how):
    """A copy of the overlay damaged as @how says."""
    path = tmp_path / f"{how}.overlay"
    shutil.copy(saved.path, path)
    header, _ = overlay_file.read_info(saved.path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(size - 4096)
        elif how == "corrupted":
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x01]))
        elif how == "unfinished":
            f.seek(16)
            f.write(bytes(8))           # stream bytes: 0 until complete
        elif how == "description":
            # A changed command line, the digest left as it was.
            f.seek(overlay_file.HEADER_BYTES)
            text = f.read(header.description_bytes)
            f.seek(overlay_file.HEADER_BYTES)
            f.write(text.replace(b'"-smp"', b'"-SMP"'))
    return str(path)


@pytest.mark.parametrize("how,cause", [
    ("truncated", r"truncated: its stream has \d+ of the \d+ bytes"),
    ("corrupted", r"overlay corrupted: the SHA-256"),
    ("unfinished", r"overlay was never finished"),
    ("description", r"overlay corrupted: the SHA-256"),
])
def test_qemu_refuses_damaged_overlay(tmp_path, saved, base, how, cause):
    log = qemu_refusal(tmp_path, base, damaged_copy(saved, tmp_path, how))
    assert re.search(cause, log), log


def test_qemu_refuses_other_machine(tmp_path, saved, base):
    log = qemu_refusal(tmp_path, base, saved.path, mem_mib=512)
    assert ("overlay made for machine.ram-bytes 268435456, this VM has "
            "536870912") in log, log


# --- the synthesis service ---------------------------------------------------

class Service:
    """scripts/handoff-synthesis.py serve, as a process (in @wrap)."""

    def __init__(self, workdir, bases, port, wrap=(), extra=()):
        self.log_path = os.path.join(workdir, "service.log")
        self.workdir = os.path.join(workdir, "vms")
        self.port = port
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, SYNTHESIS, "serve", "--bases", bases,
             "--listen", f"127.0.0.1:{port}", "--workdir", self.workdir,
             "--host-files", GUEST,
             "--qemu-arg=-gdb", "--qemu-arg=unix:{workdir}/gdb.sock,"
                                "server=on,wait=off", *extra],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while "serving" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def vm_dirs(self):
        return os.listdir(self.workdir) if os.path.isdir(self.workdir) else []

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self._log.close()


@pytest.fixture
def bases_dir(tmp_path, base):
    """A directory of bases, as a cloudlet serves them."""
    d = tmp_path / "bases"
    d.mkdir()
    os.symlink(base, d / "test")
    return str(d)


class SynthesizedVM(GuestVM):
    """A VM the service launched, seen through its files for the identity
    checks (its QEMU is the service's child, not ours)."""

    class _Running:
        def poll(self):
            return None

    def __init__(self, result):
        self.name = result["vm"]
        self.workdir = result["workdir"]
        self.disk = os.path.join(self.workdir, "disk.qcow2")
        self.guest = vm_lib.test_guest()
        self.serial_path = os.path.join(self.workdir, "serial.log")
        self.log_path = os.path.join(self.workdir, "qemu.log")
        self.gdb_path = os.path.join(self.workdir, "gdb.sock")
        self.proc = self._Running()
        self.qmp = QMPClient(result["qmp"])

    def stop(self):
        self.qmp.close()


def synthesize(service_addr, overlay, *extra):
    run = subprocess.run([sys.executable, SYNTHESIS, "synthesize",
                          f"{service_addr[0]}:{service_addr[1]}", overlay,
                          "--json", *extra],
                         capture_output=True, text=True, timeout=600)
    return run


def test_service_synthesizes_identical_vm(tmp_path, saved, bases_dir):
    """Through the service (kept paused by --paused, so that its RAM can
    be compared with the saved VM's before it runs)."""
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      extra=("--paused",))
    try:
        run = synthesize(("127.0.0.1", service.port), saved.path)
        assert run.returncode == 0, run.stderr + service.log()
        result = json.loads(run.stdout)
        t = result["timings"]
        assert t["total"] >= t["transfer"] > 0 and t["launch"] > 0
        assert result["overlay-bytes"] == overlay_file.read_info(
            saved.path)[0].stream_bytes
        vm = SynthesizedVM(result)
        try:
            assert_is_saved_vm(saved, vm)
        finally:
            vm.stop()
        assert re.search(r"synthesis from 127\.0\.0\.1:\d+: \S+ paused, "
                         r"\d+ bytes, timings", service.log()), service.log()
    finally:
        service.stop()
