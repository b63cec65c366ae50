# SPDX-License-Identifier: GPL-2.0-or-later
"""The handoff-early block filter (early start's disk gate, design step 4),
iotests-style: a real qemu-system-x86_64 (-S, the guest never runs) with
the graph filter -> qcow2 overlay -> raw base, a SCSI disk on the filter
(its node in the main loop's AioContext, or in an iothread's), and HMP `qemu-io -d` driving reads and writes in the background
(aio_read, aio_write), whose completions QEMU prints on its stdout.
Chunks are marked absent and placed by the test-only QMP commands.

The base is all BASE_BYTE, so a read that went through too early would show
it: every check compares exact bytes, and a request held back is shown to
be held (no completion on stdout a while after, the filter's wait count).
"""

import base64
import os
import re
import subprocess
import time

import pytest

from qemu_handoff.guest import QEMU, QEMU_IMG
from qemu_handoff.paths import FIRMWARE_DIRS
from qemu_handoff.qmp import QMPClient, QMPError, end_qemu

CHUNK = 4096
DISK = 32 << 20
BASE_BYTE = 0x11
GUEST_BYTE = 0xCC
# How long a request held back is watched to stay held.
HELD = 1.0


class EarlyDisk:
    """One QEMU with a handoff-early filter over a fresh overlay."""

    def __init__(self, tmp_path, log_only=False, iothread=False,
                 failing_writes=False):
        base = tmp_path / "base.raw"
        base.write_bytes(bytes([BASE_BYTE]) * DISK)
        self.overlay = tmp_path / "overlay.qcow2"
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b",
                        str(base), "-F", "raw", str(self.overlay)],
                       check=True)
        self.out_path = tmp_path / "qemu.out"
        sock = str(tmp_path / "qmp")
        firmware = [a for d in FIRMWARE_DIRS for a in ("-L", d)]
        early = "driver=handoff-early,node-name=early,file=ovl"
        if log_only:
            early += ",log-only=on"
        # blkdebug under the overlay fails every write with EIO.
        ovl_file = "ovl-file"
        debug = []
        if failing_writes:
            ovl_file = "dbg"
            debug = ["-blockdev", "driver=blkdebug,node-name=dbg,"
                     "image=ovl-file,inject-error.0.event=pwritev,"
                     "inject-error.0.errno=5"]
        # stdbuf: qemu-io prints with printf; line buffering lets the test
        # see each completion when it happens.
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", QEMU, "-machine", "pc", "-accel", "tcg", "-S",
             "-nodefaults", "-display", "none", *firmware,
             "-object", "iothread,id=io0",
             "-blockdev", f"driver=file,node-name=base-file,filename={base},"
                          "read-only=on",
             "-blockdev", "driver=raw,node-name=base,file=base-file,"
                          "read-only=on",
             "-blockdev", "driver=file,node-name=ovl-file,"
                          f"filename={self.overlay}",
             *debug,
             "-blockdev", f"driver=qcow2,node-name=ovl,file={ovl_file},"
                          "backing=base",
             "-blockdev", early,
             # virtio-scsi moves its disks into its iothread as they are
             # plugged (virtio-blk only once the guest starts it).
             "-device", "virtio-scsi-pci,id=scsi0" +
                        (",iothread=io0" if iothread else ""),
             "-device", "scsi-hd,drive=early,id=sd0,bus=scsi0.0",
             "-qmp", f"unix:{sock},server=on,wait=off"],
            stdout=open(self.out_path, "w"), stderr=subprocess.STDOUT)
        self.qmp = QMPClient(sock)
        if iothread:
            # The node's requests and its placement coroutine then run in
            # the iothread, the QMP commands in the main thread.  The
            # device's backend refuses a move: this succeeds only if the
            # node is in io0 already.
            self.qmp.cmd("x-blockdev-set-iothread", node_name="early",
                         iothread="io0", force=True)

    def close(self):
        end_qemu(self.qmp, self.proc)

    def io(self, command):
        """Starts a qemu-io command on the device; returns where its
        output will start on QEMU's stdout."""
        mark = len(self.out())
        answer = self.qmp.hmp(f'qemu-io -d sd0 "{command}"')
        assert answer == "", answer
        return mark

    def out(self):
        return self.out_path.read_text()

    def mark_absent(self, chunk, count=1):
        self.qmp.cmd("x-handoff-early-mark-absent", node_name="early",
                     chunk=chunk, count=count)

    def place(self, *placements):
        """Each placement: (chunk, bytes) or (chunk, 'zero', count)."""
        items = []
        for p in placements:
            if p[1] == "zero":
                items.append({"chunk": p[0], "zero-chunks": p[2]})
            else:
                items.append({"chunk": p[0],
                              "data": base64.b64encode(p[1]).decode()})
        self.qmp.cmd("x-handoff-early-place", node_name="early",
                     placements=items)

    def info(self):
        return self.qmp.cmd("x-handoff-early-query", node_name="early")

    def settled(self, timeout=10):
        """The filter's state once its placement queue is empty."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.info()
            if info["queued-bytes"] == 0 or time.monotonic() > deadline:
                return info
            time.sleep(0.05)

    def wait_for(self, mark, text, timeout=10):
        """QEMU's output after @mark, once it holds @text; fails after
        @timeout."""
        deadline = time.monotonic() + timeout
        while text not in self.out()[mark:]:
            assert self.proc.poll() is None, self.out()
            assert time.monotonic() < deadline, \
                f"no '{text.strip()}' in {timeout} s:\n{self.out()[mark:]}"
            time.sleep(0.02)
        return self.out()[mark:]

    def wait_done(self, mark, verb, offset, length):
        """The output once the aio request that completes `verb
        LENGTH/LENGTH bytes at offset OFFSET` after @mark has."""
        return self.wait_for(
            mark, f"{verb} {length}/{length} bytes at offset {offset}\n")

    def assert_held(self, mark, verb, offset, length):
        """The request is still held after a while: not completed."""
        time.sleep(HELD)
        text = self.out()[mark:]
        assert f"{verb} {length}/" not in text, text
        assert "failed" not in text, text

    def read(self, offset, length):
        """The bytes an aio_read returns, from its hex dump."""
        mark = self.io(f"aio_read -v {offset} {length}")
        return dumped(self.wait_done(mark, "read", offset, length),
                      offset, length)


def dumped(text, offset, length):
    """Bytes [offset, +length) of a qemu-io hex dump (`-v`) in @text."""
    data = {}
    for m in re.finditer(r"^([0-9a-f]{8}):  ((?:[0-9a-f]{2} )+)", text,
                         re.MULTILINE):
        at = int(m.group(1), 16)
        for i, byte in enumerate(m.group(2).split()):
            data[at + i] = int(byte, 16)
    return bytes(data[offset + i] for i in range(length))


def image_bytes(overlay, tmp_path, offset, length):
    """What the overlay reads as at rest, QEMU gone (qemu-img)."""
    raw = tmp_path / "final.raw"
    subprocess.run([QEMU_IMG, "convert", "-O", "raw", str(overlay),
                    str(raw)], check=True)
    with open(raw, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture(params=["main-loop", "iothread"])
def disk(request, tmp_path):
    d = EarlyDisk(tmp_path, iothread=request.param == "iothread")
    yield d
    d.close()


def test_read_of_an_absent_chunk_waits_for_its_placement(disk):
    disk.mark_absent(2)
    data = os.urandom(CHUNK)
    whole = disk.io(f"aio_read -v {2 * CHUNK} {CHUNK}")
    # A read that only starts in a present chunk waits as well.
    across = disk.io(f"aio_read -v {CHUNK + 512} {CHUNK}")
    disk.assert_held(whole, "read", 2 * CHUNK, CHUNK)
    assert disk.info()["waits"] == 2
    disk.place((2, data))
    assert dumped(disk.wait_done(whole, "read", 2 * CHUNK, CHUNK),
                  2 * CHUNK, CHUNK) == data
    assert dumped(disk.wait_done(across, "read", CHUNK + 512, CHUNK),
                  CHUNK + 512, CHUNK) == \
        bytes([BASE_BYTE]) * (CHUNK - 512) + data[:512]
    info = disk.settled()
    assert (info["absent"], info["placed"], info["writes"]) == (0, 1, 1)


def test_partial_write_of_an_absent_chunk_waits(disk, tmp_path):
    disk.mark_absent(3)
    data = os.urandom(CHUNK)
    at = 3 * CHUNK + 512
    mark = disk.io(f"aio_write -P {GUEST_BYTE:#x} {at} 1024")
    disk.assert_held(mark, "wrote", at, 1024)
    assert disk.info()["waits"] == 1
    disk.place((3, data))
    disk.wait_done(mark, "wrote", at, 1024)
    want = data[:512] + bytes([GUEST_BYTE]) * 1024 + data[1536:]
    assert disk.read(3 * CHUNK, CHUNK) == want
    info = disk.settled()
    assert (info["placed"], info["superseded"], info["dropped"]) == (1, 0, 0)
    disk.close()
    assert image_bytes(disk.overlay, tmp_path, 3 * CHUNK, CHUNK) == want


def test_whole_chunk_write_supersedes_the_placement(disk, tmp_path):
    disk.mark_absent(4, 2)
    mark = disk.io(f"aio_write -P {GUEST_BYTE:#x} {4 * CHUNK} {CHUNK}")
    disk.wait_done(mark, "wrote", 4 * CHUNK, CHUNK)
    mark = disk.io(f"aio_write -z {5 * CHUNK} {CHUNK}")
    disk.wait_done(mark, "wrote", 5 * CHUNK, CHUNK)
    info = disk.info()
    assert (info["waits"], info["superseded"], info["absent"]) == (0, 2, 0)
    disk.place((4, os.urandom(CHUNK)), (5, os.urandom(CHUNK)))
    info = disk.settled()
    assert (info["dropped"], info["placed"], info["writes"]) == (2, 0, 0)
    want = bytes([GUEST_BYTE]) * CHUNK + bytes(CHUNK)
    assert disk.read(4 * CHUNK, 2 * CHUNK) == want
    disk.close()
    assert image_bytes(disk.overlay, tmp_path, 4 * CHUNK, 2 * CHUNK) == want


def test_present_and_uncarried_chunks_go_straight_through(disk):
    disk.mark_absent(5)
    disk.mark_absent(7)
    data = os.urandom(CHUNK)
    disk.place((5, data))
    assert disk.settled()["placed"] == 1
    held = disk.io(f"aio_read -v {7 * CHUNK} {CHUNK}")
    # While a read waits on chunk 7, the placed chunk and one never
    # carried (the base's bytes are right there) are read at once.
    assert disk.read(5 * CHUNK, CHUNK) == data
    assert disk.read(6 * CHUNK, CHUNK) == bytes([BASE_BYTE]) * CHUNK
    assert disk.info()["waits"] == 1
    assert f"read {CHUNK}/{CHUNK} bytes at offset {7 * CHUNK}" \
        not in disk.out()[held:]
    last = os.urandom(CHUNK)
    disk.place((7, last))
    assert dumped(disk.wait_done(held, "read", 7 * CHUNK, CHUNK),
                  7 * CHUNK, CHUNK) == last


def test_consecutive_placements_coalesce(disk):
    disk.mark_absent(8, 4)
    disk.mark_absent(13, 7)
    data = [os.urandom(CHUNK) for _ in range(5)]
    # One item per chunk, as a stream delivers them: 8-11 are one write,
    # 13 another, the zero run 16-19 a third (a different kind from 13's
    # data, and not adjacent to it).
    disk.place((8, data[0]), (9, data[1]), (10, data[2]), (11, data[3]),
               (13, data[4]), (16, "zero", 4))
    info = disk.settled()
    # One command's items are queued together (an iothread's worker used
    # to race them and write what it had): coalesced in both contexts.
    assert (info["placed"], info["writes"], info["queued-bytes"]) == \
        (9, 3, 0), info
    assert info["absent"] == 2                   # 14 and 15
    assert disk.read(8 * CHUNK, 4 * CHUNK) == b"".join(data[:4])
    assert disk.read(13 * CHUNK, CHUNK) == data[4]
    assert disk.read(16 * CHUNK, 4 * CHUNK) == bytes(4 * CHUNK)
    assert disk.info()["waits"] == 0


def test_placements_are_checked_and_split(disk):
    disk.mark_absent(0, 512)
    with pytest.raises(QMPError, match="not within"):
        disk.place((DISK // CHUNK, "zero", 1))
    with pytest.raises(QMPError, match="whole number"):
        disk.place((0, os.urandom(CHUNK)), (1, os.urandom(100)))
    with pytest.raises(QMPError, match="not within"):
        disk.place((0, os.urandom(CHUNK)), (DISK // CHUNK - 1, "zero", 2))
    with pytest.raises(QMPError, match="either data or zero-chunks"):
        disk.qmp.cmd("x-handoff-early-place", node_name="early",
                     placements=[{"chunk": 0}])
    with pytest.raises(QMPError, match="Base64 data contains invalid characters"):
        disk.qmp.cmd("x-handoff-early-place", node_name="early",
                     placements=[{"chunk": 0, "data": "!!!!"}])
    # Its map keeps its size: a resize would let requests past it.
    with pytest.raises(QMPError, match="cannot be resized"):
        disk.qmp.cmd("block_resize", node_name="early", size=2 * DISK)
    info = disk.info()
    # A list with a bad item is refused whole: chunk 0 was not queued.
    assert (info["queued-bytes"], info["placed"], info["absent"]) == \
        (0, 0, 512)
    # One item of 256 chunks is written 64 chunks (256 KiB) at a time.
    big = os.urandom(256 * CHUNK)
    disk.place((0, big))
    info = disk.settled()
    assert (info["placed"], info["writes"], info["absent"]) == (256, 4, 256)
    assert disk.read(0, 256 * CHUNK) == big


def test_log_only_logs_first_touches_and_never_waits(tmp_path):
    disk = EarlyDisk(tmp_path, log_only=True)
    try:
        disk.mark_absent(2, 4)
        assert disk.read(4 * CHUNK, CHUNK) == bytes([BASE_BYTE]) * CHUNK
        mark = disk.io(f"aio_write -P {GUEST_BYTE:#x} {2 * CHUNK + 100} 10")
        disk.wait_done(mark, "wrote", 2 * CHUNK + 100, 10)
        disk.read(4 * CHUNK, 2 * CHUNK)
        info = disk.info()
        assert [t["chunk"] for t in info["log"]] == [4, 2, 5]
        assert (info["touched"], info["waits"], info["absent"]) == (3, 0, 1)
        with pytest.raises(QMPError, match="log-only"):
            disk.place((3, os.urandom(CHUNK)))
        # Marked again, logged chunks would be logged again, without bound.
        with pytest.raises(QMPError, match="logged first touches already"):
            disk.mark_absent(2, 4)
        assert len(disk.info()["log"]) == 3
    finally:
        disk.close()


def test_a_failed_placement_fails_requests_instead_of_releasing_them(
        tmp_path):
    disk = EarlyDisk(tmp_path, failing_writes=True)
    try:
        disk.mark_absent(2)
        held = disk.io(f"aio_read -v {2 * CHUNK} {CHUNK}")
        disk.assert_held(held, "read", 2 * CHUNK, CHUNK)
        disk.place((2, os.urandom(CHUNK)))
        disk.wait_for(held, "readv failed: Input/output error")
        assert f"read {CHUNK}/" not in disk.out()[held:]
        # From then on the node fails every request, carried or not, and
        # takes no placement.
        mark = disk.io(f"aio_read {6 * CHUNK} {CHUNK}")
        disk.wait_for(mark, "readv failed: Input/output error")
        with pytest.raises(QMPError, match="an earlier placement failed"):
            disk.place((3, os.urandom(CHUNK)))
        assert disk.info()["placed"] == 0
    finally:
        disk.close()
