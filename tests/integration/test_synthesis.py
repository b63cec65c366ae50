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

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from qemu_handoff.gdbstub import GDBStub
from qemu_handoff.bases import (create_base, overlay_on, run_workload,
                                start_from_base, wait_heartbeat_after)
from qemu_handoff.identity import (assert_goes_on, assert_ram_unchanged,
                                   assert_same_disk, assert_same_ram)
from qemu_handoff.qmp import QMPClient, QMPError
from qemu_handoff.synthesis.client import read_json_line
from qemu_handoff.synthesis.transport import client_context
from qemu_handoff.tls import CertificateAuthority
import qemu_handoff.guest as vm_lib
from qemu_handoff.guest import GUEST, GuestVM, free_tcp_port
from qemu_handoff.paths import TOP
from qemu_handoff.wan import WanLink

from qemu_handoff.formats import early_feed
from qemu_handoff.formats import overlay as overlay_file
from qemu_handoff.formats import working_set
from qemu_handoff.synthesis import early_protocol
from qemu_handoff.synthesis.segment_sender import (SegmentSender,
                                                   prepare_spool,
                                                   segments_start)

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
        first = dump[:-len(".ram")] + ".first.ram"
        os.replace(dump, first)
        # Nothing writes the saved VM's memory after the save's final sync.
        assert_ram_unchanged(src, first, seconds=1)
        return Saved(str(path), src.disk, first, max(src.heartbeats()))
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
    # The machine as data (version 2): boot files by name, devices with
    # links to host resources by kind, nothing of this host.
    assert description["version"] == 2
    assert description["boot"]["kernel"] == "vmlinuz"
    assert description["boot"]["initrd"] == "initrd.img"
    assert description["serial-ports"] == 1
    [disk] = description["devices"]
    assert disk["model"] == "virtio-blk-pci" and \
        disk["properties"]["drive"] == "disk", disk
    assert "args" not in description
    # (The guest's kernel command line is the guest's own.)
    text = json.dumps({**description, "boot": {
        **description["boot"], "append": ""}})
    for host_only in (TOP, GUEST, os.path.dirname(saved.path), "qmp",
                      "console", "/"):
        assert host_only not in text, host_only
    assert description["compression"] == "lzma-6"
    with open(os.path.join(TOP, "VERSION")) as f:
        version = f.read().strip()
    assert description["created"]["tool"].startswith(f"qemu-handoff {version}")


def test_cancelled_save_leaves_nothing_and_a_running_vm_saves(tmp_path, base, vms):
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

    # Saved again while it runs, through HMP: rounds, then paused.
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=1 << 30)
    src.qmp.cmd("migrate-set-parameters", handoff_base=base)
    assert "Saving" in src.qmp.hmp(f"handoff_overlay_save {path} zstd-3")
    assert src.wait_migration()["status"] == "completed"
    assert "Migration status: completed" in src.qmp.hmp("info migrate")
    assert src.status() == "postmigrate"
    assert overlay_file.read_info(str(path))[1]["compression"] == "zstd-3"
    src.qmp.cmd("cont")
    wait_heartbeat_after(src, 2)


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


def read_working_set(path, total_pages, disk_chunks):
    """The log handoff-record-stop wrote (formats.working_set checks each
    chunk once, times in order): pc.ram's chunks and the disk's, each in
    order, inside their region."""
    entries = working_set.read(path)
    memory = [chunk for region, chunk, _ in entries if region == "pc.ram"]
    on_disk = [chunk for region, chunk, _ in entries if region == "disk"]
    assert all(0 <= chunk < total_pages for chunk in memory)
    assert all(0 <= chunk < disk_chunks for chunk in on_disk)
    return memory, on_disk


def assert_no_recording_blocker(vm):
    reasons = vm.qmp.cmd("query-migrate").get("blocked-reasons", [])
    assert not any("working-set recording" in r for r in reasons), reasons


def test_recording_places_every_page_and_logs_first_touches(tmp_path, saved,
                                                             base, vms):
    """handoff-record-start moves the loaded VM's RAM aside and gives each
    page back on first touch (userfaultfd), logging it; stop gives back
    the rest. Stopped at once, every page comes back; read whole while
    recording, RAM is the saved VM's, every page logged once in address
    order, and no migration may start; run while recording, the guest goes
    on from where it was saved and the log holds the pages it touched
    first, a part of RAM."""
    dst = qemu_with_overlay(tmp_path, base, saved.path).start()
    vms.append(dst)
    total = dst.guest.mem_mib << 20 >> 12
    disk_chunks = os.path.getsize(os.path.join(base, "disk.raw")) >> 12
    assert dst.wait_incoming()["status"] == "completed"
    dst.qmp.cmd("handoff-record-start", path=str(tmp_path / "none.order"))
    assert dst.qmp.cmd("handoff-record-stop") == {"pages": 0,
                                                  "disk-chunks": 0}
    # A log that cannot be written is refused before RAM is moved, and
    # leaves no migration blocker behind.
    with pytest.raises(QMPError, match="No such file or directory"):
        dst.qmp.cmd("handoff-record-start",
                    path=str(tmp_path / "missing" / "x.order"))
    assert_no_recording_blocker(dst)

    dst.qmp.cmd("handoff-record-start", path=str(tmp_path / "read.order"))
    with pytest.raises(QMPError, match="a recording is running"):
        dst.qmp.cmd("handoff-record-start", path=str(tmp_path / "x"))
    with pytest.raises(QMPError, match="working-set recording is running"):
        dst.qmp.cmd("migrate", uri="exec:cat >/dev/null")
    assert any("working-set recording" in r for r in
               dst.qmp.cmd("query-migrate")["blocked-reasons"])
    assert_same_ram(saved.ram_dump, dst)    # pages the first stop placed
    info = dst.qmp.cmd("handoff-record-stop")
    assert_no_recording_blocker(dst)
    read, _ = read_working_set(tmp_path / "read.order", total,
                               disk_chunks)
    assert info == {"pages": len(read), "disk-chunks": 0}
    assert read == sorted(read)
    # pmemsave reads guest-physical addresses in order; the VGA window and
    # the BIOS area (0xa0000-0xfffff) do not map RAM.
    assert total - 96 <= len(read) <= total, len(read)
    assert read[:16] == list(range(16))
    dst.qmp.cmd("cont")
    assert_goes_on(dst, saved.last_beat)
    with pytest.raises(QMPError, match="must be paused"):
        dst.qmp.cmd("handoff-record-start", path=str(tmp_path / "x"))
    dst.stop()

    run = qemu_with_overlay(tmp_path, base, saved.path, name="run").start()
    vms.append(run)
    assert run.wait_incoming()["status"] == "completed"
    run.qmp.cmd("handoff-record-start", path=str(tmp_path / "run.order"))
    run.qmp.cmd("cont")
    assert_goes_on(run, saved.last_beat)
    # The workload's 16 MiB of files, read from the disk, not the cache.
    run.shell("echo 3 > /proc/sys/vm/drop_caches; cat /mnt/work/* "
              ">/dev/null")
    info = run.qmp.cmd("handoff-record-stop")
    touched, read_disk = read_working_set(tmp_path / "run.order",
                                          total, disk_chunks)
    print(f"working set: {len(touched)} pages of {total}, "
          f"{len(read_disk)} disk chunks")
    assert info == {"pages": len(touched), "disk-chunks": len(read_disk)}
    assert 0 < len(touched) < total // 2, len(touched)
    assert 16 << 20 >> 12 <= len(read_disk) < disk_chunks // 4
    wait_heartbeat_after(run, 2)        # plain RAM again, the guest runs
    assert "handoff-record-disk" not in json.dumps(
        run.qmp.cmd("query-named-block-nodes"))


def test_recording_refuses_shared_ram(tmp_path, base, vms):
    """RAM another process may map (a shared memfd, as vhost-user needs)
    would be filled behind the recording, and emptying a file-backed
    block punches a hole in its file: refused, RAM untouched."""
    mib = vm_lib.test_guest().mem_mib
    vm = vm_lib.GuestVM("shared", str(tmp_path),
                        overlay_on(base, str(tmp_path / "shared.qcow2")),
                        extra_args=[
                            "-S", "-handoff", f"base={base}",
                            "-object", f"memory-backend-memfd,id=pc.ram,"
                            f"size={mib}M,share=on",
                            "-machine", "memory-backend=pc.ram"]).start()
    vms.append(vm)
    with pytest.raises(QMPError, match="backed by a file or shared memory"):
        vm.qmp.cmd("handoff-record-start", path=str(tmp_path / "x.order"))
    assert_no_recording_blocker(vm)
    assert not any(p.name.startswith("x.order") for p in tmp_path.iterdir())
    vm.qmp.cmd("cont")
    vm.wait_serial(r"^heartbeat \d+\r?$", timeout=120)


def qemu_refusal(tmp_path, base, overlay, handoff_options="", **kw):
    """Runs a QEMU on @overlay that must refuse it (paused: -S): returns
    its stderr. @handoff_options: more -handoff options."""
    vm = qemu_with_overlay(tmp_path, base, overlay, name="refused", **kw)
    vm.args[vm.args.index("-handoff") + 1] += handoff_options
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
        elif how == "cut-in-header":
            f.truncate(overlay_file.HEADER_BYTES - 1)
        elif how == "cut-in-description":
            f.truncate(overlay_file.HEADER_BYTES + header.description_bytes
                       - 1)
        elif how == "cut-after-description":
            f.truncate(overlay_file.HEADER_BYTES + header.description_bytes)
        elif how == "corrupted":
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x01]))
        elif how == "unfinished":
            f.seek(16)
            f.write(bytes(8))           # stream bytes: 0 until complete
        elif how == "description":
            # A changed machine, the digest left as it was.
            f.seek(overlay_file.HEADER_BYTES)
            text = f.read(header.description_bytes)
            f.seek(overlay_file.HEADER_BYTES)
            f.write(text.replace(b'"cpus"', b'"CPUS"'))
    return str(path)


@pytest.mark.parametrize("how,cause", [
    ("truncated", r"truncated: its stream has \d+ of the \d+ bytes"),
    ("cut-in-header", r"overlay truncated in its header"),
    ("cut-in-description", r"overlay truncated in its description"),
    ("cut-after-description", r"truncated: its stream has 0 of the"),
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


# --- early start: a segmented overlay, re-saved paused ---------------------

class Resaved:
    """An early-start overlay of the saved VM, and what its save refused."""

    def __init__(self, path, order_lines, refusals):
        self.path = path
        self.order_lines = order_lines
        self.refusals = refusals


def write_order(path, entries):
    """A working-set order file in the form handoff-record-stop writes."""
    with open(path, "w") as f:
        f.write(f"# {working_set.MAGIC}\n")
        for ns, (region, chunk) in enumerate(entries):
            f.write(f"{region} {chunk} {ns}\n")


def qmp_refusal(vm, command, **args):
    """The error @command gave, or None when it was accepted."""
    try:
        vm.qmp.cmd(command, **args)
    except QMPError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def resaved(module_tmp, saved, base):
    """The saved VM loaded paused (-S: it never runs) and saved again with
    an early-start order (docs/design/early-start.md, section 2.1): the
    same VM, its stream segmented with the order's chunks first. The
    order: the top of RAM backwards, every 7th page, some disk chunks. On
    the way, the save refuses an order file naming a region the base
    lacks, and a running VM."""
    work = module_tmp / "resaved"
    work.mkdir()
    entries = [("pc.ram", c) for c in range(65535, 61439, -1)] + \
        [("pc.ram", c) for c in range(0, 61440, 7)] + \
        [("disk", c) for c in range(256)]
    order = work / "working-set.order"
    write_order(order, entries)
    bad = work / "bad.order"
    write_order(bad, [("pc.ram", 1), ("nosuch", 5)])
    path = work / "early.overlay"
    vm = qemu_with_overlay(work, base, saved.path, name="resave").start()
    try:
        assert vm.wait_incoming()["status"] == "completed"
        refusals = {"bad-order": qmp_refusal(
            vm, "handoff-overlay-save", path=str(path),
            early_start_order=str(bad))}
        assert not path.exists() and not os.path.exists(f"{path}.part")
        save_overlay(vm, path, early_start_order=str(order))
        vm.qmp.cmd("cont")
        refusals["running"] = qmp_refusal(
            vm, "handoff-overlay-save", path=str(work / "running.overlay"),
            early_start_order=str(order))
        return Resaved(str(path), len(entries), refusals)
    finally:
        vm.stop()


def test_early_start_save_refuses_bad_orders_and_running_vms(resaved):
    """An order file is refused by its bad line, before any file is
    written; a running VM, whose rounds would send chunks again, by
    name."""
    assert re.search(r"early-start-order: .*bad\.order:3: no region "
                     r"'nosuch' in the base", resaved.refusals["bad-order"]
                     or ""), resaved.refusals
    assert "early-start-order needs a paused VM" in (
        resaved.refusals["running"] or ""), resaved.refusals


def test_qemu_launches_early_start_overlay_identical(tmp_path, saved,
                                                     resaved, base, vms):
    """The description names the segmented stream and its root; QEMU
    loads it segment by segment and the VM is the saved one."""
    header, description = overlay_file.read_info(resaved.path)
    early = overlay_file.early_start(description)
    assert early and len(early.root) == 32, description.get("early-start")
    assert early.root != bytes(32)          # the placeholder was filled in
    assert early.order_chunks == resaved.order_lines
    with open(resaved.path, "rb") as f:
        f.seek(overlay_file.HEADER_BYTES)
        assert hashlib.sha256(f.read()).digest() == header.digest
    dst = qemu_with_overlay(tmp_path, base, resaved.path).start()
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    assert_is_saved_vm(saved, dst)


def early_start_info(vm):
    return vm.qmp.cmd("query-handoff-early-start")


def wait_early_start_completed(vm, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = early_start_info(vm)
        if info["status"] == "completed":
            return info
        if vm.proc.poll() is not None:
            raise RuntimeError(f"QEMU exited: {vm.read_log()}")
        time.sleep(0.2)
    raise TimeoutError(f"early start still applying: {info}")


def early_started(tmp_path, base, overlay, rate):
    """A QEMU launched from @overlay with early start, its segments paced
    at @rate bytes a second in the background."""
    vm = qemu_with_overlay(tmp_path, base, overlay)
    handoff = vm.args.index("-handoff") + 1
    vm.args[handoff] += f",early-start=on,x-early-rate={rate}"
    return vm.start()


@pytest.mark.race
def test_early_start_loads_paused_vm_identical(tmp_path, saved, resaved,
                                              base, vms):
    """Early start on a paused VM: the load (device state included)
    completes while segments are still being applied, those the device
    load touched first; when all are in, RAM and disk are the saved VM's
    byte for byte, and it goes on from where it was saved."""
    dst = early_started(tmp_path, base, resaved.path, 4 << 20)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    info = early_start_info(dst)
    assert info["status"] == "active", info
    assert info["segments-applied"] < info["segments"], info
    done = wait_early_start_completed(dst)
    assert done["segments-applied"] == done["segments"], done
    assert "applied-ms" in done, done
    assert_is_saved_vm(saved, dst)


@pytest.mark.race
def test_early_start_runs_before_its_segments_are_in(tmp_path, saved,
                                                    resaved, base, vms):
    """Resumed, the VM runs once its device state is in: heartbeats go
    on from the saved VM's while segments are still being applied, the
    chunks it touches fetched out of order; then every segment is in,
    its disk is the saved VM's, and it runs on."""
    dst = early_started(tmp_path, base, resaved.path, 2 << 20)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    # Saved paused, it loads paused: resumed as the service does.
    dst.qmp.cmd("cont")
    dst.wait_serial(r"^heartbeat \d+\r?$", timeout=60)
    during = early_start_info(dst)
    assert during["status"] == "active", \
        f"every segment was in before the first heartbeat: {during}"
    assert dst.status() == "running"
    assert during["faults"] > 0 and during["demanded"] > 0, during
    beats = dst.heartbeats()
    assert beats[0] in (saved.last_beat + 1, saved.last_beat + 2), beats
    assert "handoff-guest: ready" not in dst.serial()
    done = wait_early_start_completed(dst)
    assert done["segments-applied"] == done["segments"], done
    after = len(dst.heartbeats())
    dst.wait_serial(rf"^heartbeat {max(dst.heartbeats()) + 1}\r?$",
                    timeout=60)
    assert len(dst.heartbeats()) > after
    dst.qmp.cmd("stop")                 # flushes its disk
    assert_same_disk(saved.disk, dst.disk)


@pytest.mark.race
def test_early_start_serves_every_chunk_on_demand(tmp_path, saved, resaved,
                                                  base, vms):
    """With the background order held after its first segment (a rate of
    a byte a second), everything else arrives on demand: a read of the
    whole disk through the device (HMP qemu-io) waits in the filter for
    each carried chunk's segment, a dump of the whole RAM (pmemsave) in a
    fault for each carried page's. The VM is then the saved one, byte for
    byte, every segment but the first applied on demand."""
    dst = early_started(tmp_path, base, resaved.path, 1)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    size = next(b["inserted"]["image"]["virtual-size"]
                for b in dst.qmp.cmd("query-block") if b.get("inserted"))
    answer = dst.qmp.hmp(f'qemu-io virtio0 "read -q 0 {size}"')
    assert answer == "", answer
    disk = early_start_info(dst)
    assert disk["disk-demands"] > 0 and disk["status"] == "active", disk
    dst.ram_digest()                    # every carried page faults
    done = wait_early_start_completed(dst, timeout=60)
    assert done["demanded"] >= done["segments"] - 1, done
    assert done["faults"] > 0, done
    assert_is_saved_vm(saved, dst)



# --- faults, kind by kind ------------------------------------------------------

PAGE = 4096
# Incompressible pages between two planted chunks in the order: 80 KiB of
# stream, more than a segment (64 KiB), so each planted chunk is in a
# segment of its own.
FILLERS = 20
RUNS = 7                    # of fillers: first, after each carried chunk
DISK_AT = 1 << 20                       # the disk range the test writes
DISK_CHUNKS = 16


def disk_pattern(i):
    return 0x10 + i


class Planted:
    """An early-start overlay of a VM with a chunk of every kind planted
    at known places (pc.ram chunk numbers, disk chunk numbers), the RAM
    dump and disk it was saved from, and the save's statistics."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def plant_page(gdb, chunk, data):
    # The stub's packets are bounded (4 KiB of hex): a page in quarters.
    for at in range(0, PAGE, 1024):
        gdb.write(chunk * PAGE + at, data[at:at + 1024])


def untouched_pages(dump, base_ram):
    """pc.ram chunks of the upper half of RAM that still hold the base's
    bytes: (those that are not zero, those that are). Nothing a device
    holds (virtio rings, buffers) is planted over: the device load would
    fault on it before the test reads."""
    same, empty = [], []
    zeros = bytes(PAGE)
    with open(dump, "rb") as now, open(base_ram, "rb") as was:
        half = os.path.getsize(dump) // PAGE // 2
        now.seek(half * PAGE)
        was.seek(half * PAGE)
        for chunk in range(half, 2 * half):
            page = now.read(PAGE)
            if page == was.read(PAGE):
                (empty if page == zeros else same).append(chunk)
    return same, empty


@pytest.fixture(scope="module")
def planted(module_tmp, base):
    """A VM stopped after boot, given one chunk of each kind through its
    gdbstub and qemu-io, saved with an order that puts each carried one in
    a segment of its own (FILLERS random pages between them):

    - base: a page left as the base has it (no record at all);
    - zero: a base page zeroed (a local ZERO record);
    - base-ref: a page given another base page's bytes (a local reference);
    - data: random bytes; delta: a base page with 16 bytes flipped (an
      XOR delta against the base, read from the base when it is applied);
    - self-ref: a second copy of a page sent earlier in the order (its
      segment depends on that page's);
    - disk: two chunks of a 64 KiB range written, each with a pattern of
      its own, in segments of their own."""
    work = module_tmp / "planted"
    work.mkdir()
    with open(os.path.join(base, "base.json")) as f:
        base_ram = os.path.join(base, json.load(f)["memory"][0]["file"])
    src = start_from_base("src", str(work), base, gdb=True)
    try:
        src.wait_serial(r"^heartbeat \d+\r?$")
        src.qmp.cmd("stop")
        _, dump = src.ram_digest()
        same, empty = untouched_pages(dump, base_ram)
        # Random bytes go on free memory (zero, as in the base).
        assert len(same) >= 40 and len(empty) >= RUNS * FILLERS + 3, \
            (len(same), len(empty))
        fillers = empty[-RUNS * FILLERS:]
        kinds = dict(zip(["base", "zero", "base-ref", "delta", "donor"],
                         same[::len(same) // 5]))
        kinds.update(zip(["data", "self-first", "self-ref"],
                         empty[-RUNS * FILLERS - 3:-RUNS * FILLERS]))
        gdb = GDBStub(src.gdb_path)
        with open(base_ram, "rb") as f:
            def base_page(chunk):
                f.seek(chunk * PAGE)
                return f.read(PAGE)
            for chunk in fillers:
                plant_page(gdb, chunk, os.urandom(PAGE))
            plant_page(gdb, kinds["zero"], bytes(PAGE))
            plant_page(gdb, kinds["base-ref"], base_page(kinds["donor"]))
            plant_page(gdb, kinds["data"], os.urandom(PAGE))
            delta = bytearray(base_page(kinds["delta"]))
            delta[1000:1016] = bytes(b ^ 0x5a for b in delta[1000:1016])
            plant_page(gdb, kinds["delta"], bytes(delta))
            twin = os.urandom(PAGE)
            plant_page(gdb, kinds["self-first"], twin)
            plant_page(gdb, kinds["self-ref"], twin)
        gdb.close()
        # A pattern of its own per chunk: equal chunks would be self
        # references travelling with their source.
        for i in range(DISK_CHUNKS):
            answer = src.qmp.hmp(f'qemu-io virtio0 "write -q -P '
                                 f'{disk_pattern(i):#x} '
                                 f'{DISK_AT + i * PAGE} {PAGE}"')
            assert answer == "", answer
        disk_read, disk_written = DISK_AT // PAGE, DISK_AT // PAGE + 2
        runs = [[("pc.ram", c) for c in fillers[i::RUNS]]
                for i in range(RUNS)]
        carried = [("pc.ram", kinds["self-first"]), ("pc.ram", kinds["data"]),
                   ("pc.ram", kinds["delta"]), ("pc.ram", kinds["self-ref"]),
                   ("disk", disk_read), ("disk", disk_written)]
        entries = runs[0]
        for chunk, run in zip(carried, runs[1:]):
            entries += [chunk, *run]
        order = work / "planted.order"
        write_order(order, entries)
        path = work / "planted.overlay"
        info = save_overlay(src, path, early_start_order=str(order),
                            compression="zstd-3+xor")
        _, dump = src.ram_digest()
        return Planted(path=str(path), disk=src.disk, ram_dump=dump,
                       kinds=kinds, disk_read=disk_read,
                       disk_written=disk_written, stats=info["handoff"])
    finally:
        src.stop()


def settled(vm):
    """Once what the device load asked for is applied: the counts hold
    still for half a second."""
    deadline = time.monotonic() + 30
    last = early_start_info(vm)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = early_start_info(vm)
        if now == last:
            return now
        last = now
    raise TimeoutError(f"early start still moving: {last}")


def read_page(vm, chunk, into):
    vm.qmp.cmd("pmemsave", val=chunk * PAGE, size=PAGE, filename=into)
    with open(into, "rb") as f:
        return f.read()


def saved_page(dump, chunk):
    with open(dump, "rb") as f:
        f.seek(chunk * PAGE)
        return f.read(PAGE)


def test_early_start_faults_on_every_kind_of_chunk(tmp_path, planted, base,
                                                   vms):
    """Each kind of chunk read before the background order reaches it
    (held after its first segment): base, zero and base-reference chunks
    are in place from the start (no fault, nothing asked for); data,
    delta and self-reference chunks fault once and get their own segment
    (the self-reference's with the segment it depends on, whose chunk
    then reads without a fault); a disk read waits for its chunk's
    segment, a 512-byte write into a chunk not in yet waits for it too
    and lands on it. Every chunk reads as saved; at the end RAM and disk
    are the saved VM's (the disk with that write)."""
    stats = planted.stats
    for kind in ("zero", "base-ref", "self-ref", "xor-delta"):
        assert stats[kind] >= 1, (kind, stats)
    expected_disk = str(tmp_path / "expected.qcow2")
    subprocess.run([vm_lib.QEMU_IMG, "create", "-q", "-f", "qcow2", "-F",
                    "qcow2", "-b", planted.disk, expected_disk], check=True)
    dst = early_started(tmp_path, base, planted.path, 1)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    page_file = str(tmp_path / "page")
    settled(dst)

    def read(kind):
        before = early_start_info(dst)
        chunk = planted.kinds[kind]
        got = read_page(dst, chunk, page_file)
        assert got == saved_page(planted.ram_dump, chunk), kind
        # The accessor wakes as its page is placed, before the count.
        after = settled(dst)
        assert after["status"] == "active", after
        return (after["faults"] - before["faults"],
                after["demanded"] - before["demanded"])

    for kind in ("base", "zero", "base-ref"):
        assert read(kind) == (0, 0), kind
    faults, demanded = read("self-ref")
    assert faults == 1 and demanded == 2, (faults, demanded)
    assert read("self-first") == (0, 0)
    for kind in ("data", "delta"):
        assert read(kind) == (1, 1), kind

    def disk_demands():
        return settled(dst)["disk-demands"]

    before = disk_demands()
    at = planted.disk_read * PAGE
    answer = dst.qmp.hmp(f'qemu-io virtio0 "read -q -P '
                         f'{disk_pattern(planted.disk_read - DISK_AT // PAGE):#x} '
                         f'{at} 4k"')
    assert answer == "", answer
    assert disk_demands() > before
    before = disk_demands()
    at = planted.disk_written * PAGE + 512
    write = f"write -q -P 0x77 {at} 512"
    answer = dst.qmp.hmp(f'qemu-io virtio0 "{write}"')
    assert answer == "", answer
    assert disk_demands() > before
    mine = disk_pattern(planted.disk_written - DISK_AT // PAGE)
    for offset, pattern in ((at - 512, mine), (at, 0x77), (at + 512, mine)):
        answer = dst.qmp.hmp(f'qemu-io virtio0 "read -q -P {pattern:#x} '
                             f'{offset} 512"')
        assert answer == "", answer
    subprocess.run([vm_lib.QEMU_IO, "-c", write, expected_disk],
                   check=True, capture_output=True)

    size = next(b["inserted"]["image"]["virtual-size"]
                for b in dst.qmp.cmd("query-block") if b.get("inserted"))
    answer = dst.qmp.hmp(f'qemu-io virtio0 "read -q 0 {size}"')
    assert answer == "", answer
    dst.ram_digest()                    # every other carried page faults
    done = wait_early_start_completed(dst, timeout=60)
    assert done["segments-applied"] == done["segments"], done
    dst.qmp.cmd("stop")                 # flushes its disk
    assert_same_disk(expected_disk, dst.disk)
    assert_same_ram(planted.ram_dump, dst)


def test_early_start_quit_before_the_end_names_the_disk_incomplete(
        tmp_path, resaved, base):
    """quit while segments are still to come: QEMU ends at once, saying
    the disk overlay lacks them, rather than tearing the block layer down
    under the filter and the thread that feed it."""
    dst = early_started(tmp_path, base, resaved.path, 1 << 20)
    try:
        assert dst.wait_incoming()["status"] == "completed"
        assert early_start_info(dst)["status"] == "active"
        try:
            dst.qmp.cmd("quit")
        except Exception:
            pass                        # QEMU may end before it answers
        assert dst.proc.wait(timeout=30) != 0
        assert re.search(r"early start: QEMU stops with \d+ of \d+ segments "
                         r"applied: the VM's disk overlays are incomplete",
                         dst.read_log()), dst.read_log()
    finally:
        dst.stop()


# --- early start fed while the segments arrive (-handoff ...,feed-fd=N) -----

def fed_qemu(tmp_path, base, overlay, spool_edit=None):
    """A QEMU launched with early start from a spool holding all of
    @overlay but its segments, at its full size, and the socket of its
    segment feed: (vm, our end). @spool_edit(path) may change the spool
    first."""
    spool = str(tmp_path / "spool.overlay")
    prepare_spool(overlay, spool)
    if spool_edit:
        spool_edit(spool)
    ours, theirs = socket.socketpair()
    vm = qemu_with_overlay(tmp_path, base, spool)
    vm.args[vm.args.index("-handoff") + 1] += \
        f",early-start=on,feed-fd={theirs.fileno()}"
    vm.pass_fds = (theirs.fileno(),)
    try:
        vm.start()
    finally:
        theirs.close()
    return vm, ours, spool


def fed_early_start(tmp_path, base, overlay, **sender_args):
    """fed_qemu, with a SegmentSender on the feed: (vm, sender)."""
    vm, ours, spool = fed_qemu(tmp_path, base, overlay)
    sender = SegmentSender(overlay, spool, ours, **sender_args)
    sender.start()
    return vm, sender


def sender_done(sender):
    sender.join(timeout=60)
    assert not sender.is_alive() and sender.error is None, sender.error


def test_early_start_fed_asks_for_what_waits(tmp_path, saved, resaved, base,
                                            vms):
    """The segments arrive through a feed that holds its order after the
    first: a read of the whole disk and a dump of the whole RAM make QEMU
    ask for every other segment (WANT), each once, and the sender's
    answers are all it applies. Then the order goes on, every segment is
    in, the digest of the now whole file checks, and the VM is the saved
    one byte for byte."""
    dst, sender = fed_early_start(tmp_path, base, resaved.path,
                                  hold_after=1)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    size = next(b["inserted"]["image"]["virtual-size"]
                for b in dst.qmp.cmd("query-block") if b.get("inserted"))
    assert dst.qmp.hmp(f'qemu-io virtio0 "read -q 0 {size}"') == ""
    dst.ram_digest()
    info = early_start_info(dst)
    assert info["feed-wanted"] == len(sender.wanted) > 0, info
    assert len(set(sender.wanted)) == len(sender.wanted), sender.wanted
    assert set(sender.sent) - set(sender.wanted) <= {0}, sender.sent
    assert info["disk-demands"] > 0 and info["faults"] > 0, info
    # Each of those faults waited for a WANT's answer: a round trip to
    # the sender, a copy and an apply each, hundreds of them.
    assert 0 < info["fault-wait-ms"] and \
        info["fault-wait-max-ms"] <= info["fault-wait-ms"], info
    sender.release()
    done = wait_early_start_completed(dst, timeout=120)
    assert done["feed-arrived"] == done["segments-applied"] == \
        done["segments"], done
    sender_done(sender)
    assert_is_saved_vm(saved, dst)


@pytest.mark.race
def test_early_start_fed_runs_while_segments_arrive(tmp_path, saved, resaved,
                                                   base, vms):
    """Resumed at once, the VM runs on the segments a sender writes at
    2 MiB/s: heartbeats go on from the saved VM's while they arrive, what
    it touches first asked for and sent ahead of the order; then its
    disk is the saved VM's and it runs on."""
    dst, sender = fed_early_start(tmp_path, base, resaved.path,
                                  rate=2 << 20)
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    dst.qmp.cmd("cont")
    dst.wait_serial(r"^heartbeat \d+\r?$", timeout=60)
    during = early_start_info(dst)
    assert during["status"] == "active", during
    assert during["feed-arrived"] < during["segments"], during
    assert during["feed-wanted"] > 0, during
    beats = dst.heartbeats()
    assert beats[0] in (saved.last_beat + 1, saved.last_beat + 2), beats
    done = wait_early_start_completed(dst)
    assert done["feed-arrived"] == done["segments"], done
    sender_done(sender)
    assert len(sender.wanted) == done["feed-wanted"], done
    dst.wait_serial(rf"^heartbeat {max(dst.heartbeats()) + 1}\r?$",
                    timeout=60)
    dst.qmp.cmd("stop")                 # flushes its disk
    assert_same_disk(saved.disk, dst.disk)


def other_digest(spool):
    with open(spool, "r+b") as f:
        f.seek(24)
        digest = f.read(32)
        f.seek(24)
        f.write(bytes(b ^ 0xff for b in digest))


@pytest.mark.parametrize("how", ["have-past-the-end", "have-cut-in-half",
                                 "closed-early", "digest"])
def test_early_start_feed_refusals(tmp_path, resaved, base, how):
    """A feed that names a segment the table lacks, or ends before every
    segment is in (also inside a message), ends QEMU naming it; so does a
    file whose digest, when it is whole at last, is not its header's (the
    device state it ran on was not the overlay's)."""
    vm, ours, spool = fed_qemu(tmp_path, base, resaved.path,
                               other_digest if how == "digest" else None)
    try:
        if how == "digest":
            sender = SegmentSender(resaved.path, spool, ours)
            sender.start()
            cause = r"the overlay, whole now, differs from its header's"
        else:
            start, size = segments_start(resaved.path)
            layout = early_feed.read_layout(ours, start, size)
            count = len(layout.segments)
            if how == "have-past-the-end":
                ours.sendall(early_feed.have(count))
                cause = rf"HAVE names segment {count} of {count}"
            elif how == "have-cut-in-half":
                # Half a HAVE is no HAVE: nothing is taken as in.
                ours.sendall(early_feed.have(0)[:4])
                ours.close()
                cause = rf"segment feed closed with 0 of {count} segments in"
            else:
                ours.close()
                cause = rf"segment feed closed with 0 of {count} segments in"
        assert vm.proc.wait(timeout=120) != 0
        log = vm.read_log()
        assert re.search(cause, log), log
        assert "the VM stops" in log, log
    finally:
        vm.stop()
        ours.close()


def segment_starts(data):
    """File offsets of the segment headers ("QSEG", u32 number, little
    endian) of an overlay's segmented stream, in number order."""
    starts = []
    while True:
        at = data.find(b"QSEG" + struct.pack("<I", len(starts)),
                       starts[-1] + 1 if starts else 0)
        if at < 0:
            return starts
        starts.append(at)


def resigned(data, description_bytes):
    """@data with its header's digest made for its bytes as they are: the
    whole-file digest QEMU checks first then passes, as it will not have
    arrived yet under early start, so the stream's own checks must
    refuse."""
    digest = hashlib.sha256(data[overlay_file.HEADER_BYTES:]).digest()
    return data[:24] + digest + data[56:]


@pytest.mark.parametrize("early", [False, True], ids=["loaded", "early"])
@pytest.mark.parametrize("damage", ["segment", "root", "cut"])
def test_qemu_refuses_early_start_overlay_damaged_inside(tmp_path, resaved,
                                                         base, damage, early):
    """A byte changed in segment k fails that segment's SHA-256, named,
    before it is applied; a root changed in the description fails the
    table part; a file cut inside its last segment (its header's size
    made to match) puts every segment elsewhere, and the first fails.
    Either way QEMU exits and the VM never ran; under early start too,
    where segment k is found bad after the load completed."""
    with open(resaved.path, "rb") as f:
        data = bytearray(f.read())
    header, _ = overlay_file.read_info(resaved.path)
    if damage == "segment":
        starts = segment_starts(bytes(data))
        assert len(starts) >= 3, len(starts)
        k = len(starts) // 2
        data[starts[k] + 100] ^= 0x01       # inside its first frame
        cause = rf"segment {k} of \d+ \(offset \d+\) fails its SHA-256"
    elif damage == "cut":
        del data[-1000:]
        data[16:24] = struct.pack(">Q", header.stream_bytes - 1000)
        cause = r"segment 0 of \d+ \(offset \d+\) fails its SHA-256"
    else:
        at = data.index(b'"root": "', overlay_file.HEADER_BYTES) + 9
        data[at] = ord("1" if data[at] != ord("1") else "2")
        cause = r"HANDOFF_E_ROOT_MISMATCH"
    path = tmp_path / f"{damage}.overlay"
    path.write_bytes(resigned(bytes(data), header.description_bytes))
    log = qemu_refusal(tmp_path, base, str(path),
                       ",early-start=on" if early else "")
    assert re.search(cause, log), log
    if early and damage != "root":
        assert "early start:" in log and "the VM stops" in log, log


def test_early_start_needs_an_early_start_overlay(tmp_path, saved, resaved,
                                                  base):
    """early-start=on needs an early-start overlay; feed-fd= needs early
    start, and a socket (stdin, /dev/null here, is not)."""
    log = qemu_refusal(tmp_path, base, saved.path, ",early-start=on")
    assert "carries no early-start stream" in log, log
    log = qemu_refusal(tmp_path, base, resaved.path, ",feed-fd=0")
    assert "feed-fd= feeds an early start: it needs early-start=on" in log, \
        log
    log = qemu_refusal(tmp_path, base, resaved.path,
                       ",early-start=on,feed-fd=0")
    assert "feed-fd=0 is not an open socket" in log, log


# --- made offline: handoff-synthesis.py create --------------------------------

def offline_vm_args(tmp_path, disk):
    """The VM's QEMU options, as its owner starts it, for `create`: without
    the monitor and -handoff, which the tool sets itself."""
    args = GuestVM("offline", str(tmp_path), disk).args[1:]
    for own in ("-qmp", "-handoff"):
        while own in args:
            i = args.index(own)
            del args[i:i + 2]
    return args


def create(base, overlay, vm_args, *options):
    return subprocess.run(
        [sys.executable, SYNTHESIS, "create", "--base", base, "-o",
         str(overlay), *options, "--", *vm_args],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_create_from_images_and_state_is_the_vm(tmp_path, base, vms):
    """A VM suspended to a state file (stock migrate to exec:) and its
    disk image become an overlay without the VM running; synthesized, it is
    that VM: RAM and disk identical, its heartbeat goes on."""
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, "mixed")
    src.wait_serial(r"^heartbeat \d+\r?$")
    src.qmp.cmd("stop")
    state = tmp_path / "vm.state"
    src.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": "handoff", "state": False}])
    src.qmp.cmd("migrate", uri=f"exec:cat > {state}")
    assert src.wait_migration()["status"] == "completed"
    _, dump = src.ram_digest()
    src.stop()
    saved = Saved(None, str(tmp_path / "kept.qcow2"), dump,
                  max(src.heartbeats()))
    shutil.copy(src.disk, saved.disk)

    saved.path = tmp_path / "offline.overlay"
    run = create(base, saved.path, offline_vm_args(tmp_path, src.disk),
                 "--state", str(state))
    assert run.returncode == 0, run.stderr
    print(run.stdout.strip())
    description = overlay_file.read_info(str(saved.path))[1]
    assert description["disks"][0]["base"] is True
    assert description["version"] == 2

    dst = qemu_with_overlay(tmp_path, base, saved.path).start()
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    assert_is_saved_vm(saved, dst)


def test_create_at_power_on_boots(tmp_path, base, vms):
    """Without a state the overlay holds the VM at power-on: synthesized,
    it boots from its images."""
    disk = overlay_on(base, str(tmp_path / "cold.qcow2"))
    overlay = tmp_path / "cold.overlay"
    run = create(base, overlay, offline_vm_args(tmp_path, disk),
                 "--compression", "zstd-3")
    assert run.returncode == 0, run.stderr
    assert "at power-on" in run.stdout
    assert overlay_file.read_info(str(overlay))[1]["compression"] == "zstd-3"
    dst = qemu_with_overlay(tmp_path, base, overlay).start()
    vms.append(dst)
    assert dst.wait_incoming()["status"] == "completed"
    assert "heartbeat" not in dst.serial()
    dst.qmp.cmd("cont")
    dst.wait_serial(r"^heartbeat 1\r?$", timeout=120)


def test_create_refusals_write_nothing(tmp_path, base):
    disk = overlay_on(base, str(tmp_path / "vm.qcow2"))
    vm_args = offline_vm_args(tmp_path, disk)
    overlay = tmp_path / "refused.overlay"
    state = tmp_path / "cut.state"
    state.write_bytes(b"QEVM\0\0\0\3" + os.urandom(4096))
    not_a_base = str(tmp_path)
    cases = [
        (base, ("--state", str(state)), vm_args,
         rf"cannot load the state {state}: .*load of migration failed"),
        (base, ("--state", str(tmp_path / "none")), vm_args,
         r"no such state file"),
        (base, (), [*vm_args, "-incoming", "defer"],
         r"-incoming: this tool sets it itself"),
        (base, (), [*vm_args, "--qmp", "stdio"],
         r"--qmp: this tool sets it itself"),
        (base, (), [], r"give the VM's QEMU options after `--`"),
        (not_a_base, (), vm_args, r"Not a handoff base: .*base.json"),
        # QEMU ends after its monitor is up: its own words, no QEMU left.
        (base, (), [*vm_args, "-drive", f"file={tmp_path}/none.qcow2"],
         r"QEMU did not start: .*none\.qcow2.*No such file"),
    ]
    for base_dir, options, args, cause in cases:
        run = create(base_dir, overlay, args, *options)
        assert run.returncode != 0
        assert re.search(cause, run.stderr), run.stderr
        assert not os.path.exists(overlay)
        assert not os.path.exists(f"{overlay}.part")
    assert not subprocess.run(["pgrep", "-f", "handoff-create-"],
                              capture_output=True).stdout, \
        "a QEMU of create is still running"


# --- the synthesis service ---------------------------------------------------

class Service:
    """scripts/handoff-synthesis.py serve, as a process (in @wrap): with
    the TLS credentials directory @tls, else plaintext on loopback."""

    def __init__(self, workdir, bases, port, wrap=(), extra=(), tls=None,
                 keep_vms=False):
        """@keep_vms: its VMs outlive it (the service's default); else
        it is run with --stop-vms-on-exit, so a test leaves no VM."""
        self.log_path = os.path.join(workdir, "service.log")
        self.workdir = os.path.join(workdir, "vms")
        self.port = port
        self._log = open(self.log_path, "w")
        # --workdir relative to the service's directory, as an operator
        # may give it (each VM's mount namespace needs it absolute).
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, SYNTHESIS, "serve", "--bases", bases,
             "--listen", f"127.0.0.1:{port}", "--workdir", "vms",
             "--qemu-arg=-gdb", "--qemu-arg=unix:{workdir}/gdb.sock,"
                                "server=on,wait=off",
             *(("--tls-creds", tls) if tls else ("--insecure",)),
             *(() if keep_vms else ("--stop-vms-on-exit",)), *extra],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 30
        while "serving" not in self.log():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def vm_dirs(self):
        """The VMs' directories, and their records (.records/NAME.json,
        the service's own): [] if no VM was made."""
        if not os.path.isdir(self.workdir):
            return []
        records = os.path.join(self.workdir, ".records")
        return [n for n in os.listdir(self.workdir) if n != ".records"] + [
            f".records/{n}" for n in (os.listdir(records)
                                      if os.path.isdir(records) else [])]

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

    def __init__(self, result, service):
        self.name = result["vm"]
        # The client is told no host path: the operator (this test) knows
        # where the service keeps its VMs.
        self.workdir = os.path.join(service.workdir, self.name)
        self.disk = os.path.join(self.workdir, "disk.qcow2")
        self.guest = vm_lib.test_guest()
        self.serial_path = os.path.join(self.workdir, "serial.log")
        self.log_path = os.path.join(self.workdir, "qemu.log")
        self.gdb_path = os.path.join(self.workdir, "gdb.sock")
        self.proc = self._Running()
        self.qmp = QMPClient(os.path.join(self.workdir, "qmp.sock"))

    def stop(self):
        self.qmp.close()


def _qemu_with_name(start):
    """The PID of a QEMU whose -name begins with @start, else None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"\0-name\0{start}".encode() in f.read():
                    return int(pid)
        except OSError:
            continue
    return None


def qemu_pid(name):
    """The PID of the QEMU running VM @name (-name NAME)."""
    pid = _qemu_with_name(name + "\0")
    if pid is None:
        raise AssertionError(f"no QEMU runs VM {name}")
    return pid


def qemu_runs_named(prefix):
    """Whether a QEMU runs a VM whose name begins with @prefix (the
    service adds random bits to a client's name)."""
    return _qemu_with_name(prefix) is not None


def qemu_status(name):
    """/proc/PID/status of the QEMU running VM @name."""
    with open(f"/proc/{qemu_pid(name)}/status") as status:
        return status.read()


def assert_confined(service, name):
    """VM @name's QEMU runs as a uid and gid of its own from the service's
    range, sees none of the host's files but its own directory (and
    read-only system files, base, firmware), and runs within its limits."""
    pid = qemu_pid(name)
    status = qemu_status(name)
    ids = {k: v.split() for k, v in re.findall(r"^(Uid|Gid|Groups):\t(.*)$",
                                                status, re.M)}
    uid, gid = int(ids["Uid"][0]), int(ids["Gid"][0])
    assert len(set(ids["Uid"])) == 1 and len(set(ids["Gid"])) == 1, ids
    assert uid >= 200000 and gid == uid and ids["Groups"] == [str(gid)], ids
    with open("/etc/passwd") as f:
        assert uid not in [int(ln.split(":")[2]) for ln in f if ":" in ln]
    workdir = os.path.join(service.workdir, name)
    st = os.stat(workdir)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o700)
    st = os.stat(os.path.join(workdir, "disk.qcow2"))
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o600)
    # Its own mount namespace: the host's files are not there.
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink(
        "/proc/self/ns/mnt")
    root = f"/proc/{pid}/root"
    for host_only in ("/etc/passwd", "/root", "/home", "/var",
                      service.log_path,
                      os.path.join(os.path.dirname(service.workdir),
                                   "bases")):
        assert not os.path.lexists(root + host_only), host_only
    assert os.path.isdir(root + workdir)
    # Its root is read-only; its directory, the same as the host's, not.
    with pytest.raises(OSError, match="Read-only file system"):
        open(root + "/planted", "w")
    assert os.path.samefile(root + workdir, workdir)
    with open(f"/proc/{pid}/limits") as f:
        limits = f.read()
    assert re.search(r"^Max open files +1024 +1024 ", limits, re.M), limits
    assert re.search(r"^Max processes +\d+ +\d+ ", limits, re.M), limits
    assert re.search(r"^Max core file size +0 +0 ", limits, re.M), limits
    return uid


def synthesize(service_addr, overlay, *extra):
    """The client, plaintext unless @extra names TLS credentials."""
    plain = () if "--tls-creds" in extra else ("--insecure",)
    run = subprocess.run([sys.executable, SYNTHESIS, "synthesize",
                          f"{service_addr[0]}:{service_addr[1]}", overlay,
                          "--json", *plain, *extra],
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
        # Nothing of the host: no path, no other VM, no base list.
        assert set(result) - {"client-seconds"} == {
            "ok", "vm", "state", "address", "ports",
            "overlay-bytes", "timings"}, result
        # Its QEMU runs under the seccomp filter (mode 2), confined.
        assert "Seccomp:\t2\n" in qemu_status(result["vm"])
        assert_confined(service, result["vm"])
        # The service verified the base: its QEMU is told, and skips it.
        with open(f"/proc/{qemu_pid(result['vm'])}/cmdline", "rb") as f:
            base_id = overlay_file.read_info(saved.path)[1]["base"]["id"]
            assert f",verified-id={base_id}".encode() in f.read()
        vm = SynthesizedVM(result, service)
        try:
            assert_is_saved_vm(saved, vm)
        finally:
            vm.stop()
        assert re.search(r"synthesis from 127\.0\.0\.1:\d+: \S+ paused, "
                         r"\d+ bytes, timings", service.log()), service.log()
    finally:
        service.stop()
    assert not qemu_runs(result["vm"]), "--stop-vms-on-exit left it"


def test_launch_runs_confined(tmp_path, saved, base):
    """`launch` (no service) confines its QEMU too; the overlay, readable
    by root only, is handed to it open. SIGTERM stops the VM (as Ctrl-C
    does; SIGINT, which a shell without job control has its background
    jobs ignore, would not reach it when the tests run so)."""
    workdir = tmp_path / "vm"
    proc = subprocess.Popen(
        [sys.executable, SYNTHESIS, "launch", saved.path, "--base", base,
         "--workdir", str(workdir), "--name",
         "launched-here"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("VM launched-here running"), \
            line + proc.stderr.read()
        status = qemu_status("launched-here")
        assert "Seccomp:\t2\n" in status
        uid = int(re.search(r"^Uid:\t(\d+)", status, re.M).group(1))
        assert uid >= 200000 and os.stat(workdir).st_uid == uid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    with pytest.raises(AssertionError, match="no QEMU runs"):
        qemu_pid("launched-here")


def refused_by_service(service, overlay, *extra):
    """Runs the client on @overlay against @service; it must fail. Returns
    its message; the service must have launched nothing (no VM files)."""
    run = synthesize(("127.0.0.1", service.port), overlay, *extra)
    assert run.returncode != 0, run.stdout
    assert service.vm_dirs() == [], service.vm_dirs()
    return run.stderr


def rewritten_description(saved, tmp_path, change):
    """A copy of the overlay whose description @change(dict) rewrote, with
    a digest that matches (as a hostile client would make it)."""
    header, description = overlay_file.read_info(saved.path)
    change(description)
    text = json.dumps(description).encode()
    with open(saved.path, "rb") as f:
        f.seek(overlay_file.HEADER_BYTES + header.description_bytes)
        stream = f.read()
    digest = hashlib.sha256(text + stream).digest()
    path = tmp_path / "rewritten.overlay"
    with open(path, "wb") as f:
        f.write(overlay_file.MAGIC + struct.pack(
            ">IIQ32s8s", overlay_file.VERSION, len(text), len(stream),
            digest, bytes(8)))
        f.write(text + stream)
    return str(path)


def test_service_refusals_launch_nothing(tmp_path, saved, bases_dir):
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      extra=("--max-bytes", str(8 << 20),
                             "--max-clients", "1"))
    try:
        # Larger than this service takes (its stream is ~26 MB).
        assert "exceeds this service's limit of 8388608" in \
            refused_by_service(service, saved.path)
        service.stop()
        service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                          extra=("--max-clients", "1",
                                 "--client-timeout", "3",
                                 "--max-vm-ram-mib", "512",
                                 "--max-vm-cpus", "2"))
        for how, cause in (("truncated", "overlay truncated: its stream "
                            "has"),
                           ("corrupted", "overlay corrupted: the SHA-256")):
            message = refused_by_service(
                service, damaged_copy(saved, tmp_path, how))
            assert cause in message, message

        # An unknown base, and machines a cloudlet must not run (the whole
        # corpus is tests/python/test_machine_args.py's, without QEMU).
        def other_base(d):
            d["base"]["id"] = "0" * 32

        def host_file(d):
            d["devices"].append({"model": "loader", "properties": {
                "file": "/etc/shadow", "addr": 0}})

        def command_line(d):
            d["args"] = ["-device", "loader,file=/etc/shadow"]
            del d["version"]

        def base_not_object(d):
            d["base"] = [d["base"]["id"]]

        def bad_disks(d):
            d["disks"] = [{"region": 1, "bytes": "many"}]

        def foreign_disk(d):
            d["devices"][0]["properties"]["drive"] = "other"

        def early_start(d):
            d["early-start"] = {"stream-version": 3, "root": "ab" * 32,
                                "order-chunks": 1}

        def early_start_huge(d):
            early_start(d)
            d["early-start"]["segments-bytes"] = 1 << 40

        def early_start_extra(d):
            early_start(d)
            d["early-start"]["segments-bytes"] = 4096
            d["early-start"]["path"] = "/etc/passwd"

        def machine(key, value):
            return lambda d: d["machine"].update({key: value})

        def machine_sized(ram, cpus):
            def change(d):
                d["machine"].update({"ram-bytes": ram, "max-ram-bytes": ram,
                                     "cpus": cpus, "max-cpus": cpus})
                d["machine"]["topology"]["sockets"] = cpus
            return change

        for change, cause in ((other_base, f"unknown base {'0' * 32}"),
                              (host_file, "device 1: model 'loader' is not "
                               "allowed"),
                              (command_line, "overlay description version "
                               "1 (a QEMU command-line fragment): this "
                               "cloudlet launches version 2"),
                              (base_not_object, "overlay description lacks "
                               "base.id"),
                              (bad_disks, "overlay description's disks are "
                               "not a list"),
                              (foreign_disk, "device 0 (virtio-blk-pci): its "
                               "drive is not a disk the overlay carries"),

                              # More than this service gives one VM (QEMU's
                              # -m and -smp are generated from these).
                              (machine("ram-bytes", 1 << 30),
                               "ram-bytes must be whole MiB, without "
                               "hotpluggable memory"),
                              (machine_sized(1 << 30, 1),
                               "ram-bytes 1073741824 exceeds this "
                               "cloudlet's limit of 512 MiB"),
                              (machine_sized(256 << 20, 4),
                               "max-cpus 4 exceeds this cloudlet's limit "
                               "of 2")):
            message = refused_by_service(
                service, rewritten_description(saved, tmp_path, change))
            assert cause in message, message

        # Early-start descriptions our client would not send (it checks
        # its own file): sent raw, refused before a byte of the stream.
        # One saved before QEMU named the segments' total cannot say
        # where they begin.
        for change, cause in ((early_start, "does not name its segments' "
                               "total"),
                              (early_start_huge, "segments-bytes "
                               "1099511627776 leaves no room for the "
                               "migration stream"),
                              (early_start_extra, "early-start has unknown "
                               "field 'path'")):
            path = rewritten_description(saved, tmp_path, change)
            with open(path, "rb") as f:
                header = overlay_file.parse_header(
                    f.read(overlay_file.HEADER_BYTES))
                f.seek(0)
                head = f.read(overlay_file.HEADER_BYTES +
                              header.description_bytes)
            with socket.create_connection(("127.0.0.1", service.port)) as s:
                s.sendall(b'{"name": "early"}\n' + head)
                s.settimeout(30)
                answer = json.loads(s.recv(65536))
            assert answer["ok"] is False and cause in answer["error"], \
                (cause, answer)
            assert service.vm_dirs() == []

        # Request lines a client made up: each refused, naming the field.
        for line, cause in (
                (b'{"early-start": 1}', "early-start is not true or false"),
                (b"not json", "request line is not JSON"),
                (b"[1]", "request line is not a JSON object"),
                (b'{"evil": 1}', "request line has unknown field 'evil'"),
                (b'{"name": 5}', "request line's name is not a string"),
                (b'{"forward": "80"}', "forward is not a list of at most"),
                (b'{"forward": [0]}', "forward is not a list of at most"),
                (b'{"forward": [80.5]}', "forward is not a list of at most"),
                (b'{"forward": [%s]}' % b",".join([b"80"] * 17),
                 "forward is not a list of at most 16 TCP ports"),
                (b'{"op": "reboot"}',
                 "op is not synthesize, list, stop or resume"),
                (b'{"op": ["list"]}',
                 "op is not synthesize, list, stop or resume"),
                (b'{"op": "stop"}', "request line's stop names no VM"),
                (b'{"op": "resume"}', "request line's resume names no VM"),
                (b'{"op": "resume", "name": "nosuch"}',
                 "no synthesis of VM 'nosuch' of yours waits to be resumed"),
                (b'{"op": "list", "name": "x"}',
                 "request line has unknown field 'name'"),
                (b'{"op": "stop", "name": "x", "forward": [80]}',
                 "request line has unknown field 'forward'")):
            with socket.create_connection(("127.0.0.1", service.port)) as s:
                s.sendall(line + b"\n")
                s.settimeout(30)
                answer = json.loads(s.recv(65536))
            assert answer["ok"] is False and cause in answer["error"], \
                (line, answer)
            assert service.vm_dirs() == []

        # Too many clients: one holds the only slot, the next is refused;
        # the first, sending nothing more, is given up after 3 s.
        with socket.create_connection(("127.0.0.1", service.port)) as s:
            s.sendall(b'{"name": "slow"}\n')
            time.sleep(1)
            message = refused_by_service(service, saved.path)
            assert "busy: 1 syntheses are running" in message, message
            s.settimeout(30)
            answer = json.loads(s.recv(65536))
            assert answer == {"ok": False, "error": "the client sent nothing "
                              "for 3 s: synthesis abandoned"}, answer
        assert re.search(r"refused: unknown base 0{32}", service.log())
    finally:
        service.stop()


SERVICE_NAME = "cloudlet.test"


def cloudlet_credentials(tmp_path):
    """A cloudlet's CA, the service's credentials and a client's."""
    ca = CertificateAuthority(str(tmp_path), "cloudlet-ca")
    service = ca.credentials(str(tmp_path), "service", "server",
                             SERVICE_NAME)
    client = ca.credentials(str(tmp_path), "phone", "client", "phone0")
    return ca, service, client


def tls_refused(service, attempt):
    """@attempt (a function of the port) fails on the TLS handshake: the
    service logs one more TLS refusal and has read no request."""
    before = service.log().count(": refused, TLS: ")
    with pytest.raises((OSError, ssl.SSLError)):
        attempt(service.port)
    deadline = time.monotonic() + 10
    while service.log().count(": refused, TLS: ") == before:
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)
    assert service.vm_dirs() == []


def test_service_lets_in_only_clients_its_ca_signed(tmp_path, saved,
                                                    bases_dir):
    """Mutual TLS: a client whose certificate another CA signed, one
    revoked by the service's CRL, an expired one, one without a
    certificate and one speaking plaintext are all refused on the
    handshake, before the service reads a byte of their request."""
    ca, service_creds, client = cloudlet_credentials(tmp_path)
    other = CertificateAuthority(str(tmp_path), "other-ca")
    foreign = other.credentials(str(tmp_path), "foreign", "client", "x",
                                also_trust=(ca,))
    revoked = ca.credentials(str(tmp_path), "revoked", "client", "phone1")
    ca.revoke(service_creds, os.path.join(revoked, "client-cert.pem"))
    expired = ca.credentials(str(tmp_path), "expired", "client", "phone2",
                             expired=True)
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      tls=service_creds)
    try:
        assert "mutual TLS" in service.log()

        def client_with(creds):
            def attempt(port):
                sock = socket.create_connection(("127.0.0.1", port), 30)
                with client_context(creds).wrap_socket(
                        sock, server_hostname=SERVICE_NAME) as s:
                    # TLS 1.3: the client's certificate is judged after
                    # the client's side of the handshake is done.
                    s.sendall(b'{"name": "x"}\n')
                    if not s.recv(65536):
                        raise ConnectionError("closed without an answer")
            return attempt

        def no_certificate(port):
            ctx = ssl.create_default_context(
                cafile=os.path.join(service_creds, "ca-cert.pem"))
            sock = socket.create_connection(("127.0.0.1", port), 30)
            with ctx.wrap_socket(sock, server_hostname=SERVICE_NAME) as s:
                s.sendall(b'{"name": "x"}\n')
                if not s.recv(65536):
                    raise ConnectionError("closed without an answer")

        def plaintext(port):
            with socket.create_connection(("127.0.0.1", port), 30) as s:
                s.sendall(b'{"name": "x"}\n')
                if not s.recv(65536):
                    raise ConnectionError("closed without an answer")

        for attempt in (client_with(foreign), client_with(revoked),
                        client_with(expired), no_certificate, plaintext):
            tls_refused(service, attempt)
        # Connections that never start their handshake hold a thread each:
        # 4 from one address at most (16 in all, 4 per synthesis slot);
        # the next is closed at once, not kept waiting.
        idle = [socket.create_connection(("127.0.0.1", service.port), 30)
                for _ in range(4)]
        try:
            time.sleep(1)
            with socket.create_connection(("127.0.0.1", service.port),
                                          30) as s:
                start = time.monotonic()
                s.settimeout(5)
                assert s.recv(1) == b""
                assert time.monotonic() - start < 2
            assert "refused, 4 connections from 127.0.0.1 are open" in \
                service.log()
        finally:
            for s in idle:
                s.close()
        # The real client says why; a client of the right CA that asks
        # for another name refuses the service itself.
        run = synthesize(("127.0.0.1", service.port), saved.path,
                         "--tls-creds", foreign, "--tls-name", SERVICE_NAME)
        assert run.returncode != 0 and "it lets in only clients whose " \
            "certificate its CA signed" in run.stderr, run.stderr
        run = synthesize(("127.0.0.1", service.port), saved.path,
                         "--tls-creds", client, "--tls-name", "other.test")
        assert run.returncode != 0 and "TLS with 127.0.0.1" in run.stderr, \
            run.stderr
        assert service.vm_dirs() == []
    finally:
        service.stop()


def assert_no_host_path(text, tmp_path, bases_dir):
    """@text (what a client heard) names neither the service's directories
    (all under @tmp_path) nor where its bases really are."""
    assert str(tmp_path) not in text, text
    for name in os.listdir(bases_dir):
        base = os.path.realpath(os.path.join(bases_dir, name))
        assert base not in text, text


def client_request(service, command, creds, *args):
    """`list` or `stop NAME` of the client with credentials @creds: (exit
    status, its output, JSON if it printed some)."""
    run = subprocess.run([sys.executable, SYNTHESIS, command,
                          f"127.0.0.1:{service.port}", *args, "--json",
                          "--tls-creds", creds, "--tls-name", SERVICE_NAME],
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    return run.returncode, output, \
        json.loads(run.stdout) if run.returncode == 0 else None


def qemu_runs(name):
    try:
        qemu_status(name)
        return True
    except AssertionError:
        return False


def test_clients_list_and_stop_only_their_vms_which_outlive_the_service(
        tmp_path, nic_saved, bases_dir):
    """Client B neither sees nor stops client A's VM, and hears of A's
    name what it hears of a name no VM has. A's VM outlives the service
    (its public port, a relay of the service's, does not); the service
    restarted finds it, relays the same port again, counts it in A's
    quota, lists it to A and stops it when A asks. No answer names a host
    path."""
    os.symlink(nic_saved.base, os.path.join(bases_dir, "web"))
    ca, service_creds, a_creds = cloudlet_credentials(tmp_path)
    b_creds = ca.credentials(str(tmp_path), "tablet", "client", "tablet0")
    # Not 127.0.0.1: the forwarded port is the service's relay.
    options = ("--max-vms-per-client", "1", "--forward-address",
               "127.0.0.2")
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      tls=service_creds, keep_vms=True, extra=options)
    outputs, vm = [], None
    try:
        run = synthesize(("127.0.0.1", service.port), nic_saved.path,
                         "--name", "mine", "--forward", "8080",
                         "--tls-creds", a_creds, "--tls-name", SERVICE_NAME)
        assert run.returncode == 0, run.stderr + service.log()
        result = json.loads(run.stdout)
        vm, port = result["vm"], result["ports"]["8080"]
        assert nic_saved.page in http_get("127.0.0.2", port)
        listed = {"vm": vm, "state": "running", "address": "127.0.0.2",
                  "ports": {"8080": port}}

        rc, out, answer = client_request(service, "list", b_creds)
        outputs.append(out)
        assert rc == 0 and answer == {"ok": True, "vms": []}, out
        for name in (vm, "mine-AAAAAAAAAAA"):
            rc, out, _ = client_request(service, "stop", b_creds, name)
            outputs.append(out)
            assert rc != 0 and out.strip().endswith(
                f"handoff-synthesis: no VM {name} of yours"), out
        assert qemu_runs(vm)
        rc, out, answer = client_request(service, "list", a_creds)
        outputs.append(out)
        assert answer == {"ok": True, "vms": [listed]}, out

        # The service ends; the VM does not. Restarted, the service knows
        # it again: its owner's quota (1) is taken, it is listed.
        service.stop()
        assert qemu_runs(vm)
        with pytest.raises(OSError):
            http_get("127.0.0.2", port, timeout=5)
        service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                          tls=service_creds, extra=options)
        assert nic_saved.page in http_get("127.0.0.2", port)
        assert f"found VM {vm} of tablet0" not in service.log()
        assert re.search(rf"found VM {vm} of phone0 \(pid \d+,",
                         service.log()), service.log()
        rc, out, answer = client_request(service, "list", a_creds)
        outputs.append(out)
        assert answer == {"ok": True, "vms": [listed]}, out
        run = synthesize(("127.0.0.1", service.port), nic_saved.path,
                         "--tls-creds", a_creds, "--tls-name", SERVICE_NAME)
        outputs.append(run.stdout + run.stderr)
        assert run.returncode != 0 and "quota: you hold 1 VMs here" in \
            run.stderr, run.stderr
        rc, out, _ = client_request(service, "stop", b_creds, vm)
        outputs.append(out)
        assert rc != 0 and f"no VM {vm} of yours" in out, out
        rc, out, answer = client_request(service, "stop", a_creds, vm)
        outputs.append(out)
        assert answer == {"ok": True, "vm": vm, "state": "stopped"}, out
        assert not qemu_runs(vm) and service.vm_dirs() == []
        rc, out, answer = client_request(service, "list", a_creds)
        assert answer == {"ok": True, "vms": []}, out
        vm = None
    finally:
        service.stop()
        if vm:
            subprocess.run([sys.executable, SYNTHESIS, "stop-all",
                            "--workdir", service.workdir], timeout=60)
    for out in outputs:
        assert_no_host_path(out, tmp_path, bases_dir)


def test_answers_carry_no_host_path(tmp_path, saved, bases_dir):
    """QEMU's words name host files: the operator's log has them, the
    client hears only the cause."""
    service = Service(str(tmp_path), bases_dir, free_tcp_port(), extra=(
        # QEMU ends before its monitor is up, naming the file.
        "--qemu-arg=-object",
        "--qemu-arg=secret,id=absent,file={workdir}/absent.key"))
    try:
        run = synthesize(("127.0.0.1", service.port), saved.path)
        assert run.returncode != 0
        assert run.stderr.strip() == ("handoff-synthesis: the VM could not "
                                      "be started"), run.stderr
        assert re.search(r"refused: the VM could not be started: .*"
                         r"absent\.key", service.log()), service.log()
        assert service.vm_dirs() == []
    finally:
        service.stop()
    assert_no_host_path(run.stdout + run.stderr, tmp_path, bases_dir)


def test_vm_records_guard_against_pid_reuse(tmp_path):
    """Records as a service left them, of stand-in VMs (processes whose
    command line names them as QEMU's does): stop-all signals the one
    whose pid and start time match, never the process now holding a
    recorded pid, and stops and removes one that was still loading."""
    from qemu_handoff.synthesis.registry import VMRecord, start_time
    workdir = tmp_path / "vms"

    def stand_in(name, state, started=None):
        proc = subprocess.Popen([sys.executable, "-c", "import time; "
                                 "time.sleep(120)", "-name", name])
        (workdir / name).mkdir(parents=True)
        VMRecord("phone0", name, proc.pid,
                 started or start_time(proc.pid), os.geteuid(), state,
                 "127.0.0.1", {}, {}, str(workdir / name)).save()
        return proc

    running = stand_in("vm-running", "running")
    reused = stand_in("vm-reused", "running", started=1)
    loading = stand_in("vm-loading", "loading")
    try:
        assert oct(os.stat(workdir / ".records" / "vm-running.json")
                   .st_mode & 0o777) == "0o600"
        run = subprocess.run([sys.executable, SYNTHESIS, "stop-all",
                              "--workdir", str(workdir)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert running.wait(timeout=10) == -15
        assert loading.wait(timeout=10) == -15
        assert reused.poll() is None, "a reused pid was signalled"
        assert "VM vm-running of phone0 stopped" in run.stdout
        assert "VM vm-reused of phone0 no longer runs" in run.stdout
        assert sorted(os.listdir(workdir)) == [".records", "vm-reused",
                                               "vm-running"]
        assert os.listdir(workdir / "vm-running") == []
        assert os.listdir(workdir / ".records") == []
    finally:
        for proc in (running, reused, loading):
            proc.kill()
            proc.wait()


def test_relay_restored_on_another_port_when_its_own_was_taken(tmp_path):
    """A restarted service whose VM's public port another process took
    meanwhile relays it from a new port, and records and says so."""
    from qemu_handoff.synthesis.registry import VMRecord
    with socket.create_server(("127.0.0.1", 0)) as vm_side, \
            socket.create_server(("127.0.0.2", 0)) as taken:
        public = taken.getsockname()[1]
        workdir = tmp_path / "vm-x"
        workdir.mkdir()
        record = VMRecord("phone0", "vm-x", 1, 1, 0, "running", "127.0.0.2",
                          {8080: public}, {8080: vm_side.getsockname()[1]},
                          str(workdir))
        log = []
        record.restore_relays(log.append, "127.0.0.2")
        try:
            port = record.ports[8080]
            assert port != public and re.match(
                rf"VM vm-x: port {public} on 127\.0\.0\.2 taken .*: guest "
                rf"port 8080 now on {port}$", log[0]), log
            assert VMRecord.load(str(tmp_path), "vm-x").ports == \
                {8080: port}
            with socket.create_connection(("127.0.0.2", port), 10) as c:
                c.sendall(b"x")
                conn, _ = vm_side.accept()
                with conn:
                    assert conn.recv(1) == b"x"
        finally:
            for relay in record.relays:
                relay.close()


def test_service_verifies_a_base_once_until_its_files_change(base):
    """The service proves a base's files against its index once (at its
    start); a file touched (its mtime even put back: its ctime moves) is
    proven again, and a failed proof refuses the base."""
    from qemu_handoff.formats import manifest
    from qemu_handoff.synthesis.base_check import (BaseCheckFailed,
                                                   VerifiedBases)
    base_id = manifest.read(base).id
    log = []
    bases = VerifiedBases(log.append)
    bases.check(base, base_id)
    bases.check(base, base_id)
    assert len(log) == 1 and re.match(
        rf"base {base_id} \(.*\) verified: \d+ bytes in", log[0]), log
    disk = manifest.read(base).disk.path
    st = os.stat(disk)
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    bases.check(base, base_id)
    assert len(log) == 2, log
    with pytest.raises(BaseCheckFailed, match="failed its verification"):
        bases.check(base, "0" * 32)         # not the ID its index gives
    failing = VerifiedBases(log.append, tool="/bin/false")
    with pytest.raises(BaseCheckFailed, match="failed its verification"):
        failing.check(base, base_id)
    # serve's start: verified from a thread of its own; the verdict is
    # the one a synthesis then finds, and a failure is logged, not raised.
    started = []
    VerifiedBases(started.append, tool="/bin/false").verify_all(
        {base_id: base})
    at_start = VerifiedBases(started.append)
    at_start.verify_all({base_id: base})
    deadline = time.monotonic() + 60
    while started.count("bases verified at start") < 2:
        assert time.monotonic() < deadline, started
        time.sleep(0.05)
    assert at_start.check(base, base_id) and len(started) == 4 and \
        any("failed its verification" in line for line in started), started


def test_qemu_trusts_verified_id_only_for_the_base_it_names(tmp_path,
                                                           saved, base,
                                                           vms):
    """-handoff verified-id=ID (what the service gives for a base it
    verified): QEMU skips its first-use re-hash, so a byte changed in the
    base's disk goes unseen; with any other ID the index does not have,
    the re-hash runs and finds it; a malformed ID is refused."""
    from qemu_handoff.formats import manifest
    changed = tmp_path / "changed-base"
    subprocess.run(["cp", "-a", "--sparse=always", base, str(changed)],
                   check=True)
    disk = manifest.read(str(changed)).disk.path
    with open(disk, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    base_id = manifest.read(base).id

    def with_id(vm_id):
        vm = qemu_with_overlay(tmp_path, str(changed), saved.path,
                               name=f"v{vm_id[:4]}")
        i = vm.args.index("-handoff") + 1
        vm.args[i] = vm.args[i].replace(
            f"base={changed},", f"base={changed},verified-id={vm_id},")
        return vm

    trusted = with_id(base_id).start()
    vms.append(trusted)
    assert trusted.wait_incoming()["status"] == "completed"
    for vm_id, cause in (("0" * 32, "chunks differ from the index"),
                         ("XYZ", "verified-id=XYZ: not a base content ID")):
        vm = with_id(vm_id)
        run = subprocess.run(vm.args, capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        assert run.returncode != 0 and cause in run.stderr, run.stderr


def test_clients_file_limits_bases_and_vms(tmp_path, saved, bases_dir):
    """serve --clients: a client may use only the bases the file names
    for it (another is refused as a base the cloudlet does not hold), up
    to its own VM count; a client the file does not name is refused. All
    before a byte of the overlay's stream, no VM made."""
    ca, service_creds, phone0 = cloudlet_credentials(tmp_path)
    phone1 = ca.credentials(str(tmp_path), "phone1", "client", "phone1")
    stranger = ca.credentials(str(tmp_path), "stranger", "client", "x")
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({
        "phone0": {"bases": ["another"], "max-vms": 4},
        "phone1": {"max-vms": 0}}))
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      tls=service_creds, extra=("--clients", str(clients)))
    try:
        base_id = overlay_file.read_info(saved.path)[1]["base"]["id"]
        for creds, cause in (
                (phone0, f"unknown base {base_id}: this cloudlet does not "
                         f"hold it"),
                (phone1, "quota: you hold 0 VMs here"),
                (stranger, "this service takes no requests from you")):
            message = refused_by_service(service, saved.path, "--tls-creds",
                                         creds, "--tls-name", SERVICE_NAME)
            assert cause in message, message
    finally:
        service.stop()


def test_plaintext_only_on_loopback(tmp_path, saved, bases_dir):
    for command, cause in (
            (["serve", "--bases", bases_dir, "--listen", "0.0.0.0:7070",
              "--insecure"], "--insecure is refused on 0.0.0.0"),
            (["serve", "--bases", bases_dir, "--listen", "127.0.0.1:7070"],
             "serve needs --tls-creds DIR"),
            (["synthesize", "192.0.2.1:7070", saved.path, "--insecure"],
             "--insecure is refused on 192.0.2.1"),
            (["synthesize", "127.0.0.1:7070", saved.path],
             "synthesize needs --tls-creds DIR")):
        run = subprocess.run([sys.executable, SYNTHESIS, *command],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and cause in run.stderr, (command, run)


def test_service_bounds_each_client_in_time(tmp_path, saved, bases_dir):
    """A client trickling its request is cut at the transfer's deadline
    (each byte comes well within the idle timeout); a refused client still
    sending is cut off within a second of its answer, having sent little
    of a stream it would have gone on sending."""
    service = Service(str(tmp_path), bases_dir, free_tcp_port(),
                      extra=("--client-timeout", "2",
                             "--transfer-timeout", "4"))
    try:
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", service.port)) as s:
            s.settimeout(30)
            try:
                for byte in b'{"name": "a-slow-client-indeed"}\n':
                    s.sendall(bytes([byte]))
                    time.sleep(0.5)
            except OSError:
                pass                    # refused (and closed) meanwhile
            answer = json.loads(s.recv(65536))
        assert answer == {"ok": False, "error": "the transfer took longer "
                          "than 4 s, this service's limit: synthesis "
                          "abandoned"}, answer
        assert time.monotonic() - start < 8

        def other_base(d):
            d["base"]["id"] = "1" * 32
        refused = rewritten_description(saved, tmp_path, other_base)
        sent = [0]
        with socket.create_connection(("127.0.0.1", service.port)) as s, \
                open(refused, "rb") as f:
            s.sendall(b'{"name": "x"}\n')
            head = f.read(1 << 20)

            def flood():
                try:
                    s.sendall(head)
                    while True:
                        sent[0] += s.send(b"\0" * (1 << 16))
                except OSError:
                    pass
            sender = threading.Thread(target=flood)
            sender.start()
            s.settimeout(30)
            answer = read_json_line(s)
            answered = time.monotonic()
            sender.join(timeout=10)
            assert not sender.is_alive(), "the service never closed"
            closed_after = time.monotonic() - answered
        assert answer["ok"] is False and "unknown base 1111" in \
            answer["error"] and "holds" not in answer["error"], answer
        assert closed_after < 2, closed_after
        # What it sent: the refused part, what the service read until it
        # closed (8 MiB at most), what the two sockets buffer.
        assert sent[0] < 32 << 20, sent[0]
        assert service.vm_dirs() == []
    finally:
        service.stop()


def test_confinement_uids_and_cgroup(tmp_path, monkeypatch):
    """VM uids skip accounts' and groups' ids, running processes' and
    those held; a range holding an account's, or overlapping a user's
    subordinate ids (/etc/subuid), is refused. A delegated
    cgroup (here a stand-in directory: this host's cgroup v2 has no
    memory controller) gets a child per VM with its limits."""
    from qemu_handoff.synthesis import confinement
    from qemu_handoff.synthesis.confinement import (
        Cgroup, ConfinementError, UidPool, check_range)
    with open("/etc/passwd") as f:
        account = max(int(ln.split(":")[2]) for ln in f if ":" in ln)
    pool = UidPool(account, 3)
    first = pool.take()
    assert first != account and pool.take() != first
    with pytest.raises(ConfinementError, match="no free uid"):
        pool.take()
    pool.give_back(first)
    assert pool.take() == first
    with pytest.raises(ConfinementError, match=f"holds id {account}"):
        check_range(account - 1, 5)
    with pytest.raises(ConfinementError, match="holds id 0"):
        check_range(0, 10)
    check_range(200000, 65536)
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbob:265000:10\n")
    monkeypatch.setattr(confinement, "_subordinate", lambda path: [
        tuple(int(x) if x.isdigit() else x for x in ln.split(":"))
        for ln in subuid.read_text().split()])
    with pytest.raises(ConfinementError, match="overlaps bob's"):
        check_range(200000, 65536)

    fake = tmp_path / "cgroup"
    fake.mkdir()
    (fake / "cgroup.controllers").write_text("cpuset cpu io memory\n")
    with pytest.raises(ConfinementError, match="lacks the pids"):
        Cgroup(str(fake))
    (fake / "cgroup.controllers").write_text("cpu io memory pids\n")
    cgroup = Cgroup(str(fake))
    assert (fake / "cgroup.subtree_control").read_text() == \
        "+memory +pids +cpu"
    child = cgroup.create("vm-1", 256 << 20, 2)
    limits = {f: (fake / "vm-1" / f).read_text()
              for f in ("memory.max", "pids.max", "cpu.max")}
    assert limits == {"memory.max": str(768 << 20), "pids.max": "130",
                      "cpu.max": "200000 100000"}, limits
    for f in limits:
        os.unlink(os.path.join(child, f))
    cgroup.remove(child)
    assert not os.path.exists(child)


# --- two clients at once over the WAN, a service answering through its
# forwarded port -------------------------------------------------------------

@pytest.fixture(scope="module")
def nic_saved(module_tmp):
    """An overlay of a test guest with a user-mode NIC, serving a page of
    its own with busybox httpd on port 8080 when saved."""
    guest = vm_lib.test_guest()
    guest.nic = True
    work = module_tmp / "nic"
    base_dir = create_base(str(work / "b"), str(work / "base"), guest=guest)
    src = start_from_base("src", str(work), base_dir, guest=guest)
    try:
        src.wait_serial(r"^heartbeat \d+\r?$")
        # The test guest's init sets up a NIC for the edge guests only.
        src.shell("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0")
        page = src.shell("mkdir -p /tmp/www && cat /proc/sys/kernel/random/"
                         "uuid | tee /tmp/www/index.html && httpd -p 8080 "
                         "-h /tmp/www").strip()
        src.qmp.cmd("stop")
        path = work / "web.overlay"
        save_overlay(src, path)
        saved = Saved(str(path), src.disk, None, max(src.heartbeats()))
        saved.page, saved.base = page, base_dir
        return saved
    finally:
        src.stop()


def http_get(address, port, timeout=60):
    with socket.create_connection((address, port), timeout=timeout) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def test_forwarded_port_taken_meanwhile(tmp_path, nic_saved, monkeypatch):
    """The port picked for a forward is taken by another process before
    QEMU binds it: QEMU fails on it, and is started again on another."""
    from qemu_handoff.synthesis import launcher
    from qemu_handoff.synthesis.confinement import UidPool
    taken = socket.create_server(("127.0.0.1", 0))
    picks = []

    def free_port(address):
        picks.append(taken.getsockname()[1] if not picks
                     else launcher.free_port.__wrapped__(address))
        return picks[-1]
    free_port.__wrapped__ = launcher.free_port
    monkeypatch.setattr(launcher, "free_port", free_port)
    _, description = overlay_file.read_info(nic_saved.path)
    workdir = tmp_path / "vm"
    workdir.mkdir()
    # The overlay is readable by root only: QEMU is handed it open.
    assert os.stat(nic_saved.path).st_mode & 0o077 == 0
    vm = launcher.LaunchedVM("race", str(workdir), description,
                             nic_saved.base, forwards=[8080],
                             overlay=nic_saved.path, uids=UidPool())
    try:
        vm.start()
        assert len(picks) == 2 and vm.ports == {8080: picks[1]}, picks
        assert vm.proc.poll() is None
        vm.wait_loaded()
    finally:
        vm.stop(remove_files=True)
        taken.close()


@contextlib.contextmanager
def service_over_wan(tmp_path, base, base_name, rate_mbit, extra=(),
                     creds=None):
    """A service serving @base (as @base_name) in a namespace behind a
    @rate_mbit, 50 ms link, mutual TLS (the default) with @creds
    (cloudlet_credentials', made here if None): yields (service, link,
    the address its clients reach it at, their TLS options)."""
    bases = tmp_path / "bases"
    bases.mkdir()
    os.symlink(base, bases / base_name)
    _, service_creds, client_creds = creds or cloudlet_credentials(tmp_path)
    tls = ("--tls-creds", client_creds, "--tls-name", SERVICE_NAME)
    with WanLink(rate_mbit=rate_mbit, rtt_ms=50) as link:
        port = free_tcp_port()
        service = Service(str(tmp_path), str(bases), port,
                          wrap=link.ns_command([]), tls=service_creds,
                          extra=("--forward-address", link.ns_addr,
                                 *extra))
        try:
            yield service, link, link.relay_to(port), tls
        finally:
            service.stop()


def test_two_clients_over_wan_get_their_service(tmp_path, nic_saved):
    """Over the WAN, mutual TLS (the default): one client's two VMs, then
    its third refused by the per-client quota before its overlay is
    read."""
    with service_over_wan(tmp_path, nic_saved.base, "web", 25,
                          ("--max-vms-per-client", "2")) as (
                              service, link, addr, tls):
        runs = [None, None]

        def client(i):
            runs[i] = synthesize(addr, nic_saved.path, "--forward",
                                 "8080", "--name", f"web{i}", *tls)

        threads = [threading.Thread(target=client, args=(i,))
                   for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results = []
        for run in runs:
            assert run.returncode == 0, run.stderr + service.log()
            results.append(json.loads(run.stdout))
        assert results[0]["vm"] != results[1]["vm"]
        for result in results:
            assert result["address"] == link.ns_addr
            reply = http_get(link.ns_addr, result["ports"]["8080"])
            assert reply.startswith("HTTP/1.") and nic_saved.page in \
                reply, reply
            vm = SynthesizedVM(result, service)
            try:
                assert_goes_on(vm, nic_saved.last_beat)
            finally:
                vm.stop()
        run = synthesize(addr, nic_saved.path, "--name", "web2", *tls)
        assert run.returncode != 0 and "quota: you hold 2 VMs here" in \
            run.stderr, run.stderr
        assert re.search(r"synthesis from 127\.0\.0\.1:\d+ \(phone0\): "
                         r"refused: quota", service.log()), service.log()


def assert_synthesized_goes_on_identical(result, service, saved):
    """The service's VM of @result runs on from where @saved's stopped
    and, stopped, has its disk byte for byte."""
    vm = SynthesizedVM(result, service)
    try:
        assert_goes_on(vm, saved.last_beat)
        vm.qmp.cmd("stop")              # flushes its disk
        assert_same_disk(saved.disk, vm.disk)
    finally:
        vm.stop()


def early_start_prefix(path):
    """Everything of the early-start overlay at @path before its
    segments, and where they begin."""
    start, size = segments_start(path)
    with open(path, "rb") as f:
        return f.read(start), start, size


def test_service_early_start_ends_with_a_bad_client(tmp_path, resaved,
                                                    bases_dir):
    """After the layout, a client that sends a frame that is no segment
    of it ends its synthesis: it hears why in the last note, the VM that
    was loading is stopped and its files removed, and the log says why.
    (A client that leaves may come back: the next test.)"""
    service = Service(str(tmp_path), bases_dir, free_tcp_port())
    try:
        prefix, start, size = early_start_prefix(resaved.path)
        with socket.create_connection(("127.0.0.1", service.port)) as s:
            s.sendall(b'{"name": "bad"}\n' + prefix)
            s.settimeout(60)
            layout = early_feed.read_layout(s, start, size)
            count = len(layout.segments)
            s.sendall(struct.pack(">II", count, 10) + bytes(10))
            reader = early_protocol.MessageReader(count)
            notes = []
            while not notes or notes[-1].get("ok"):
                part = s.recv(65536)
                assert part, notes
                notes += [v for kind, v in reader.feed(part)
                          if kind == "note"]
        assert notes[0]["state"] == "loading", notes
        assert f"segment frame {count} of 10 bytes: not a segment" in \
            notes[-1]["error"], notes
        wait_log(service, r"synthesis from .*refused: .*not a segment of "
                 r"this overlay")
        assert service.vm_dirs() == [], service.vm_dirs()
    finally:
        service.stop()


@pytest.mark.parametrize("how", ["eager past the area",
                                 "cut while QEMU launches"])
def test_service_early_start_ends_a_client_gone_or_bad_before_the_layout(
        tmp_path, resaved, bases_dir, how):
    """Before QEMU gave the layout, the client's EAGER frames are its
    only bytes: one that runs past the segments' area (the last segment
    not yet whole, so the check cannot be skipped for every segment
    being in) is refused with the cause, in a line (no layout went out:
    the client reads no notes yet); a
    client gone while QEMU launched never heard its VM's name, so its
    synthesis ends at once. Either way the VM is stopped and its files
    removed."""
    service = Service(str(tmp_path), bases_dir, free_tcp_port())
    try:
        prefix, start, size = early_start_prefix(resaved.path)
        with socket.create_connection(("127.0.0.1", service.port)) as s, \
                open(resaved.path, "rb") as f:
            s.sendall(b'{"name": "early"}\n' + prefix)
            if how == "cut while QEMU launches":
                s.shutdown(socket.SHUT_RDWR)
            else:
                area = size - start
                f.seek(start)
                left = area - 100
                while left:
                    data = f.read(min(left, early_feed.SEGMENT_MAX_BYTES))
                    s.sendall(early_protocol.eager_frame(data))
                    left -= len(data)
                s.sendall(early_protocol.eager_frame(b"x" * 200))
                s.settimeout(120)
                answer = json.loads(s.makefile("rb").readline())
                assert not answer["ok"] and f"eager frame of 200 bytes at " \
                    f"byte {area - 100} of the segments' {area}" \
                    in answer["error"], answer
        wait_log(service, "refused: the client left while its VM launched"
                 if how == "cut while QEMU launches" else
                 r"refused: eager frame of 200 bytes")
        assert service.vm_dirs() == [], service.vm_dirs()
        assert not qemu_runs_named("early-"), "its QEMU still runs"
    finally:
        service.stop()


@pytest.mark.race
def test_service_early_start_over_wan(tmp_path, saved, resaved, base):
    """An early-start overlay through the service, over mutual TLS and a
    20 Mbit/s, 50 ms link: the segments start while QEMU launches; the
    VM runs, confined, once everything but the
    segments is in, long before the last segment arrives; what it
    touches first is asked of the client and sent ahead; when every
    segment is in, the heartbeats go on from the saved VM's and its disk
    is the saved VM's, byte for byte."""
    with service_over_wan(tmp_path, base, "test", 20) as (
            service, link, addr, tls):
        run = synthesize(addr, resaved.path, *tls)
        assert run.returncode == 0, run.stderr + service.log()
        result = json.loads(run.stdout)
        t = result["timings"]
        assert result["complete"] and result["state"] == "running", \
            result
        # 25 MB take 10 s at 20 Mbit/s; the VM ran within a few.
        assert t["running"] < t["complete"] / 2, result
        assert result["client-running-seconds"] < \
            result["client-seconds"] / 2, result
        es = result["early-start"]
        assert es["feed-wanted"] > 0 and es["faults"] > 0, result
        # The link carried segments while QEMU launched (EAGER frames).
        assert 0 < es["eager-segments"] < es["segments"], result
        assert 0 < es["in-when-running"] < es["segments"], result
        assert_confined(service, result["vm"])
        assert_synthesized_goes_on_identical(result, service, saved)
        assert re.search(r"synthesis from 127\.0\.0\.1:\d+ \(phone0\): "
                         r"\S+ running", service.log()), service.log()


def wait_log(service, pattern, timeout=120):
    """The first match of @pattern in @service's log, once it is there."""
    deadline = time.monotonic() + timeout
    while not (m := re.search(pattern, service.log())):
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.1)
    return m


def cut_client(addr, overlay, name, tls, service):
    """A client of @overlay killed once its VM runs at the cloudlet, the
    segments still arriving: the VM's name."""
    client = subprocess.Popen([sys.executable, SYNTHESIS, "synthesize",
                               f"{addr[0]}:{addr[1]}", overlay, "--json",
                               "--name", name, *tls],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        vm = wait_log(service, rf"synthesis of ({name}-\S+): running, "
                      r"(\d+) of (\d+) segments in")
        assert int(vm.group(2)) < int(vm.group(3)), vm.group(0)
    finally:
        client.kill()
        client.wait()
    return vm.group(1)


def test_service_early_start_client_cut_resumes_or_removes(tmp_path, saved,
                                                          resaved, base):
    """The client cut after its VM runs: the VM waits for it, running on
    what it has; the same client back within the bound (--resume NAME)
    sends only what is missing, a resume whose predecessor's connection
    the service still holds open (half-open) takes over, and the VM ends
    identical (heartbeats on from the saved VM's, disk byte-identical);
    cut and never back, the VM
    is removed at the bound with the cause logged and told to a client
    that comes back late. Another client of the same CA naming the VM
    is answered as if there were none, and takes nothing over."""
    creds = cloudlet_credentials(tmp_path)
    other = ("--tls-creds",
             creds[0].credentials(str(tmp_path), "phone1", "client",
                                  "phone1"),
             "--tls-name", SERVICE_NAME)
    with service_over_wan(tmp_path, base, "test", 20,
                          ("--reconnect-timeout", "8"), creds) as (
                              service, link, addr, tls):
        gone = cut_client(addr, resaved.path, "gone", tls, service)
        wait_log(service, rf"synthesis of {gone}: the client left with "
                 r"\d+ of \d+ segments in; waiting 8 s")
        wait_log(service, rf"refused: VM {gone} removed: the client left "
                 r"with \d+ of \d+ segments in, not back within 8 s")
        assert not any(gone in n for n in service.vm_dirs()), \
            service.vm_dirs()               # its files and its record
        assert not qemu_runs(gone)
        late = synthesize(addr, resaved.path, "--resume", gone, *tls)
        assert late.returncode != 0 and f"VM {gone} removed" in \
            late.stderr, late.stderr

        back = cut_client(addr, resaved.path, "back", tls, service)
        wait_log(service, rf"synthesis of {back}: the client left")
        assert qemu_runs(back)
        stranger = synthesize(addr, resaved.path, "--resume", back, *other)
        assert stranger.returncode != 0 and \
            f"no synthesis of VM '{back}' of yours waits" in \
            stranger.stderr, stranger.stderr
        assert "the client is back" not in service.log(), service.log()
        assert qemu_runs(back)
        # Back, then silent with its connection open (half-open, as after
        # a link cut without a reset): the service would wait for it up
        # to its idle bound; a second resume cuts that connection and
        # goes on at once.
        silent = subprocess.Popen([sys.executable, SYNTHESIS, "synthesize",
                                   f"{addr[0]}:{addr[1]}", resaved.path,
                                   "--json", "--resume", back, *tls],
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            wait_log(service, rf"synthesis of {back}: the client is back")
            silent.send_signal(signal.SIGSTOP)
            run = synthesize(addr, resaved.path, "--resume", back, *tls)
        finally:
            silent.kill()
            silent.wait()
        wait_log(service, rf"synthesis of {back}: a resume replaced the "
                 r"client's connection; waiting 8 s")
        assert run.returncode == 0, run.stderr + service.log()
        result = json.loads(run.stdout)
        assert result["complete"] and result["vm"] == back, result
        wait_log(service, rf"synthesis of {back}: the client is back, "
                 r"\d+ of \d+ segments in")
        assert_synthesized_goes_on_identical(result, service, saved)
