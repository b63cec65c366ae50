# SPDX-License-Identifier: GPL-2.0-or-later
"""Proof that a moved VM is the VM that left: the checks every migration
and handoff test makes once the destination has loaded everything.

- guest RAM byte-identical (pmemsave of both, paused), with a negative
  control: one byte flipped in the destination through its gdbstub must be
  reported at its address, and is put back before the guest runs;
- disks identical (qemu-img compare on the two overlays);
- the guest goes on where it stopped: the destination's first heartbeat
  follows the source's last, and init did not start again.
"""

import subprocess

from gdbstub import GDBStub
from vm import QEMU_IMG

# Inside the guest's 256 MiB, away from the firmware areas.
PROBE_ADDR = 0x5A5_A5A5


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


def assert_same_vm(src, dst):
    """src: finished source (postmigrate); dst: loaded destination, paused,
    started with gdb=True."""
    assert dst.wait_incoming()["status"] == "completed"
    assert src.status() == "postmigrate"
    assert dst.status() == "paused"
    last_src_beat = max(src.heartbeats())

    # `stop` on a paused VM still drains and flushes its block devices, so
    # the destination overlay on the host is complete before we read it.
    dst.qmp.cmd("stop")
    compare = subprocess.run([QEMU_IMG, "compare", "-U", src.disk, dst.disk],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr

    src_ram, src_dump = src.ram_digest()
    dst_ram, dst_dump = dst.ram_digest()
    assert src_ram == dst_ram, first_difference(src_dump, dst_dump)

    gdb = GDBStub(dst.gdb_path)
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
