# SPDX-License-Identifier: GPL-2.0-or-later
"""Proof that a moved VM is the VM that left: the checks every migration
and handoff test makes once the destination has loaded everything.

- guest RAM byte-identical (pmemsave of both, paused; pages the guest
  agent reported free may read as zeros instead), with a negative
  control: one byte flipped in the destination through its gdbstub must be
  reported at its address, and is put back before the guest runs;
- the stopped source's RAM unchanged seconds after the move (nothing
  writes a stopped VM's memory);
- disks identical (qemu-img compare on the two overlays);
- the guest goes on where it stopped: the destination's first heartbeat
  follows the source's last, and init did not start again.
"""

import os
import subprocess
import time

from .gdbstub import GDBStub
from .ram_owner import owners_of
from .guest import QEMU_IMG

# Inside the guest's 256 MiB, away from the firmware areas.
PROBE_ADDR = 0x5A5_A5A5


PAGE = 4096


def page_set(ranges):
    """The 4 KiB pages the [start, end) byte ranges @ranges cover."""
    return {p for a, b in ranges for p in range(a // PAGE, b // PAGE)}


def _window(page, i, width=64):
    """The @width bytes of @page around index @i, aligned, as hex."""
    start = i - i % width
    return start, page[start:start + width].hex(" ", 8)


def _describe_page(address, pa, pb, owner=None):
    """What differs in one page of the two dumps: its first differing
    address and both sides' bytes there (64 of them, aligned), so that a
    failure can be read without the dumps (a vring field, a counter, a
    page of text), and with @owner (address -> text, ram_owner.Owners)
    what holds that address."""
    i = next(i for i, (x, y) in enumerate(zip(pa, pb)) if x != y)
    count = sum(x != y for x, y in zip(pa, pb))
    start, src = _window(pa, i)
    _, dst = _window(pb, i)
    text = (f"RAM differs first at guest-physical {address + i:#x}: "
            f"{pa[i]:#04x} != {pb[i]:#04x} (page offset {i:#x}, {count} "
            f"bytes of the page differ)\n"
            f"  source      {address + start:#x}: {src}\n"
            f"  destination {address + start:#x}: {dst}")
    if owner is not None:
        text += f"\n  owner: {owner(address + i)}"
    return text


def ram_difference(src_dump, dst_dump, free=(), owner=None):
    """Compares two RAM dumps. @free: guest-physical byte ranges the
    source's guest agent reported free; a page there may read as zeros on
    the destination instead of the source's stale bytes. @owner: see
    _describe_page. Returns (None or a message naming the first differing
    address, both sides' bytes there, its owner and how many pages differ
    in all, pages that were zeros on the destination because they were
    free)."""
    free_pages = page_set(free)
    zero = bytes(PAGE)
    skipped = 0
    first, others = None, []
    with open(src_dump, "rb") as a, open(dst_dump, "rb") as b:
        offset = 0
        while True:
            block_a, block_b = a.read(1 << 20), b.read(1 << 20)
            if len(block_a) != len(block_b):
                return f"RAM dumps differ in length near {offset:#x}", skipped
            if not block_a:
                break
            if block_a != block_b:
                for p in range(0, len(block_a), PAGE):
                    pa, pb = block_a[p:p + PAGE], block_b[p:p + PAGE]
                    if pa == pb:
                        continue
                    if (offset + p) // PAGE in free_pages and pb == zero:
                        skipped += 1
                        continue
                    if first is None:
                        first = _describe_page(offset + p, pa, pb, owner)
                    else:
                        others.append(offset + p)
            offset += len(block_a)
    if first is None:
        return None, skipped
    if others:
        listed = ", ".join(f"{a:#x}" for a in others[:8])
        first += (f"\n  {len(others)} more pages differ: {listed}"
                  f"{', ...' if len(others) > 8 else ''}")
    return first, skipped


def probe_address(src_dump, dst_dump):
    """PROBE_ADDR, or the first address 1 MiB apart after it, in a page
    both dumps hold alike: a byte flipped there is the only difference of
    its page, whatever the free ranges say."""
    size = os.path.getsize(src_dump)
    with open(src_dump, "rb") as a, open(dst_dump, "rb") as b:
        for probe in range(PROBE_ADDR, size, 0x10_0000):
            page = probe - probe % PAGE
            a.seek(page)
            b.seek(page)
            if a.read(PAGE) == b.read(PAGE):
                return probe
    raise AssertionError("no page of the dumps is alike")


def assert_same_disk(src_disk, dst_disk):
    """The two images read the same (qemu-img compare, images in use
    allowed: flush the destination first)."""
    compare = subprocess.run([QEMU_IMG, "compare", "-U", src_disk, dst_disk],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr


def _explained(src_dump, dst_dump, free, explain):
    """ram_difference, and when the dumps differ, again with the owners
    @explain() names (a zero-argument callable: asking costs QMP round
    trips, and the page classes need the destination running)."""
    difference, skipped = ram_difference(src_dump, dst_dump, free)
    if difference and explain is not None:
        try:
            owners = explain()
        except Exception as e:      # the difference matters, not this
            return (f"{difference}\n  owner: not found ({type(e).__name__}: "
                    f"{e})"), skipped
        difference, _ = ram_difference(src_dump, dst_dump, free, owners)
    return difference, skipped


def assert_same_ram(src_dump, dst, free=(), explain=None):
    """The RAM of @dst (paused, started with a gdbstub) is @src_dump's,
    and a byte flipped in it would have been found at its address (the
    byte is put back). @free: see ram_difference; @explain: see
    _explained. Returns how many free pages the destination holds as
    zeros."""
    dst_ram, dst_dump = dst.ram_digest()
    difference, skipped = _explained(src_dump, dst_dump, free, explain)
    assert difference is None, difference

    probe = probe_address(src_dump, dst_dump)
    gdb = GDBStub(dst.gdb_path)
    original = gdb.read(probe, 1)
    gdb.write(probe, bytes([original[0] ^ 0xFF]))
    corrupt_ram, corrupt_dump = dst.ram_digest()
    assert corrupt_ram != dst_ram
    difference, _ = ram_difference(src_dump, corrupt_dump, free)
    assert difference and f"guest-physical {probe:#x}:" in difference
    gdb.write(probe, original)
    gdb.close()
    assert dst.ram_digest()[0] == dst_ram
    return skipped


def assert_same_vm(src, dst, free=()):
    """src: finished source (postmigrate); dst: loaded destination, paused,
    started with gdb=True. @free: see ram_difference. Returns how many
    free pages the destination holds as zeros."""
    assert dst.wait_incoming()["status"] == "completed"
    assert src.status() == "postmigrate"
    assert dst.status() == "paused"
    last_src_beat = max(src.heartbeats())

    # `stop` on a paused VM still drains and flushes its block devices, so
    # the destination overlay on the host is complete before we read it.
    dst.qmp.cmd("stop")
    assert_same_disk(src.disk, dst.disk)

    _, src_dump = src.ram_digest()
    first_dump = src_dump[:-len(".ram")] + ".first.ram"
    os.replace(src_dump, first_dump)
    # A difference names its owner: the source's virtqueues (rings and
    # the buffers in its dump), and what the guest keeps there, asked of
    # the destination's agent (resumed: the check has failed already).
    skipped = assert_same_ram(
        first_dump, dst, free,
        explain=lambda: owners_of(src, first_dump, classes_of=dst))
    # Seconds later (the destination's dumps and probe), the stopped
    # source has not written its RAM since (no device, timer or iothread
    # of a stopped VM may: what it sent would no longer be what it holds).
    assert_ram_unchanged(src, first_dump)
    os.unlink(first_dump)

    dst.qmp.cmd("cont")
    assert_goes_on(dst, last_src_beat)
    return skipped


def assert_ram_unchanged(vm, earlier_dump, seconds=0):
    """@vm (stopped) holds the RAM of @earlier_dump, its own, @seconds
    later: a stopped VM's memory is what a handoff sent or an overlay
    saved, and nothing may write it afterwards."""
    time.sleep(seconds)
    _, dump = vm.ram_digest()
    difference, _ = _explained(earlier_dump, dump, (),
                               lambda: owners_of(vm, earlier_dump))
    assert difference is None, \
        f"{vm.name} is stopped, yet its RAM changed (earlier dump first):\n" \
        f"{difference}"


def assert_goes_on(dst, last_src_beat):
    """@dst, just resumed, goes on where the source stopped: its first
    heartbeat follows the source's last, and init did not start again."""
    dst.wait_serial(r"^heartbeat \d+\r?$", timeout=30)
    beats = dst.heartbeats()
    assert beats[0] in (last_src_beat + 1, last_src_beat + 2), \
        f"source stopped at {last_src_beat}, destination went on at {beats[0]}"
    assert "handoff-guest: ready" not in dst.serial(), \
        "the guest booted again on the destination"
    assert dst.status() == "running"
