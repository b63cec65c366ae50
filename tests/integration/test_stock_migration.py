# SPDX-License-Identifier: GPL-2.0-or-later
"""Stock QEMU live migration still works in the fork, and state survives.

Boots the test guest, lets a workload fill memory and write files, migrates
it with plain `migrate` (incremental block migration over the shared base)
to a second process started with -S, then proves identity: guest RAM equal
byte for byte, disks equal, and the guest resumes on the destination where
it stopped (heartbeat counter continues, no reboot).
"""

import os
import subprocess

import pytest

from gdbstub import GDBStub
from vm import QEMU_IMG, GuestVM, create_overlay, free_tcp_port

# A guest-physical address inside the guest's RAM (256 MiB), away from the
# low-memory firmware areas, used to prove the RAM comparison can fail.
PROBE_ADDR = 0x5A5_A5A5


@pytest.fixture
def vms(tmp_path):
    started = []
    yield started
    for vm in started:
        vm.stop()


def test_stock_migrate_preserves_ram_disk_and_execution(tmp_path, vms):
    src_disk = create_overlay(str(tmp_path / "src.qcow2"))
    dst_disk = create_overlay(str(tmp_path / "dst.qcow2"))
    port = free_tcp_port()
    gdb_port = free_tcp_port()

    src = GuestVM("src", str(tmp_path), src_disk, workload="mixed").start()
    vms.append(src)
    src.wait_serial(r"handoff-guest: workload mixed done", timeout=180)
    src.wait_serial(r"^heartbeat 3\r?$", timeout=30)

    dst = GuestVM("dst", str(tmp_path), dst_disk,
                 incoming=f"tcp:127.0.0.1:{port}",
                 extra_args=["-gdb", f"tcp:127.0.0.1:{gdb_port}"]).start()
    vms.append(dst)

    src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}", inc=True)
    info = src.wait_migration()
    assert info["status"] == "completed", info
    assert dst.wait_incoming()["status"] == "completed"
    assert src.status() == "postmigrate"
    assert dst.status() == "paused"
    last_src_beat = max(src.heartbeats())

    # `stop` on a paused VM still drains and flushes its block devices, so
    # the destination overlay on the host is complete before we read it.
    dst.qmp.cmd("stop")
    compare = subprocess.run([QEMU_IMG, "compare", "-U", src_disk, dst_disk],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    # The workload's files live in the overlay: the comparison covered data.
    assert os.path.getsize(src_disk) > 8 << 20

    src_ram, src_dump = src.ram_digest()
    dst_ram, dst_dump = dst.ram_digest()
    assert src_ram == dst_ram, first_difference(src_dump, dst_dump)

    # Negative control: one flipped byte of destination RAM must be caught,
    # at its address. The byte is restored before the guest runs again.
    gdb = GDBStub(gdb_port)
    original = gdb.read(PROBE_ADDR, 1)
    gdb.write(PROBE_ADDR, bytes([original[0] ^ 0xFF]))
    corrupt_ram, corrupt_dump = dst.ram_digest()
    assert corrupt_ram != src_ram
    assert f"guest-physical {PROBE_ADDR:#x}:" in \
        first_difference(src_dump, corrupt_dump)
    gdb.write(PROBE_ADDR, original)
    gdb.close()
    assert dst.ram_digest()[0] == src_ram

    dst.qmp.cmd("cont")
    dst.wait_serial(r"^heartbeat \d+\r?$", timeout=30)
    beats = dst.heartbeats()
    assert beats[0] in (last_src_beat + 1, last_src_beat + 2), \
        f"source stopped at {last_src_beat}, destination went on at {beats[0]}"
    assert "handoff-guest: ready" not in dst.serial(), \
        "the guest booted again on the destination"
    assert dst.status() == "running"


def first_difference(path_a, path_b):
    """Names the first differing guest-physical address of two RAM dumps."""
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        offset = 0
        while True:
            block_a, block_b = a.read(1 << 20), b.read(1 << 20)
            if block_a != block_b:
                for i, (x, y) in enumerate(zip(block_a, block_b)):
                    if x != y:
                        return (f"RAM differs first at guest-physical "
                                f"{offset + i:#x}: {x:#04x} != {y:#04x}")
                return f"RAM dumps differ in length near {offset:#x}"
            if not block_a:
                return "RAM dumps are equal"
            offset += len(block_a)
