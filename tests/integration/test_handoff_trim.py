# SPDX-License-Identifier: GPL-2.0-or-later
"""Discarded disk blocks (fstrim, a `discard` mount) cross the link as zero
runs, on IDE and on virtio-blk: the guest deletes a file of random data and
trims, the handoff sends those chunks as one record per range instead of
their stale bytes, the disks compare equal, the destination's overlay has
zero clusters where the source's has them, and the guest runs on.
"""

import json
import subprocess

import pytest

from qemu_handoff.bases import (create_base, run_workload, start_destination,
                                start_from_base, wait_heartbeat_after)
from qemu_handoff.identity import assert_same_vm
from qemu_handoff.guest import QEMU_IMG

MIB = 1 << 20
CHUNK = 4096
# Random data the guest writes and deletes, and data it keeps.
DELETED_MIB = 24
KEPT_MIB = 4


@pytest.fixture(scope="module", params=["virtio", "ide"])
def iface_base(request, module_tmp):
    work = module_tmp / f"base-{request.param}"
    return request.param, create_base(str(work), str(work / "base"),
                                      disk_interface=request.param)


def zero_clusters(overlay):
    """Byte ranges the overlay itself holds as zero clusters."""
    out = subprocess.run([QEMU_IMG, "map", "-U", "--output=json", overlay],
                         check=True, capture_output=True, text=True).stdout
    return [(e["start"], e["start"] + e["length"]) for e in json.loads(out)
            if e["depth"] == 0 and e["zero"] and not e["data"]]


def covered(ranges, start, end):
    """Bytes of [start, end) inside @ranges."""
    return sum(max(0, min(end, b) - max(start, a)) for a, b in ranges)


def write_and_delete(vm, online_discard):
    """A kept file, and a deleted one and base files deleted; their blocks
    are trimmed by fstrim or, with the `discard` mount option, by ext4 on
    commit."""
    if online_discard:
        vm.shell("mount -o remount,discard /mnt")
    vm.shell(f"mkdir -p /mnt/trim && "
             f"dd if=/dev/urandom of=/mnt/trim/kept bs=1M count={KEPT_MIB} "
             f"2>/dev/null && "
             f"dd if=/dev/urandom of=/mnt/trim/deleted bs=1M "
             f"count={DELETED_MIB} 2>/dev/null && sync")
    # Files of the base too: their clusters now read as zeros on the
    # source, so a destination that skipped them would show the base's.
    vm.shell("rm -r /mnt/trim/deleted /mnt/modules/fs && sync")
    if not online_discard:
        out = vm.shell("fstrim -v /mnt")
        assert "trimmed" in out, out
    vm.shell("sync")


def trimmed_source(tmp_path, iface, base, vms, online_discard):
    """A running source that wrote, deleted and trimmed files (see
    write_and_delete): (the VM, the byte ranges its overlay holds as zero
    clusters)."""
    src = start_from_base("src", str(tmp_path), base, disk_interface=iface)
    vms.append(src)
    wait_heartbeat_after(src, 1)
    write_and_delete(src, online_discard)
    trimmed = zero_clusters(src.disk)
    # The deleted file's clusters became zero clusters in the overlay.
    assert sum(b - a for a, b in trimmed) >= DELETED_MIB * MIB * 0.9, trimmed
    return src, trimmed


@pytest.mark.parametrize("online_discard", [False, True],
                         ids=["fstrim", "mount-discard"])
def test_trimmed_blocks_cross_as_zero_runs(tmp_path, iface_base, vms,
                                           online_discard):
    iface, base = iface_base
    src, trimmed = trimmed_source(tmp_path, iface, base, vms, online_discard)
    move_trimmed(tmp_path, iface, base, vms, src, trimmed)


@pytest.mark.parametrize("iface_base", ["virtio"], indirect=True)
def test_round_0_cut_short_still_sends_zero_runs(tmp_path, iface_base, vms):
    """A downtime limit that the whole VM fits: round 0 ends at once and
    everything it had not offered is carried into the next round. The
    trimmed chunks among them still go as zero runs, every one of them
    (they were read as data once round 0 was over)."""
    iface, base = iface_base
    src, trimmed = trimmed_source(tmp_path, iface, base, vms, False)
    src.qmp.cmd("migrate-set-parameters", downtime_limit=600_000)
    stats = move_trimmed(tmp_path, iface, base, vms, src, trimmed,
                         share=1.0)
    assert stats["iteration"] >= 1, stats


def move_trimmed(tmp_path, iface, base, vms, src, trimmed, share=0.95):
    """Hands @src off and checks that its @trimmed ranges (at least @share
    of their chunks) crossed as zero runs and stayed zero clusters, and
    that the VM moved whole. Returns the handoff's statistics."""
    dst = start_destination("dst", str(tmp_path), base, disk_interface=iface)
    vms.append(dst)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    stats = info["handoff"]
    # Every trimmed chunk went as part of a zero run, not as a chunk read.
    trimmed_chunks = sum(b // CHUNK - (a + CHUNK - 1) // CHUNK
                         for a, b in trimmed)
    assert stats["zero-run"] >= trimmed_chunks * share, \
        (stats, trimmed_chunks)
    # The destination's overlay keeps them as zero clusters: it did not
    # allocate what the source's does not hold.
    dst.qmp.cmd("stop")
    dst_zero = zero_clusters(dst.disk)
    for a, b in trimmed:
        assert covered(dst_zero, a, b) == b - a, (a, b, dst_zero)
    assert_same_vm(src, dst)
    assert "handoff: disk" not in src.read_log()     # no discard warning
    return stats


@pytest.mark.race
@pytest.mark.parametrize("iface_base", ["virtio"], indirect=True)
def test_trims_racing_the_handoff(tmp_path, iface_base, vms):
    """Files written, deleted and trimmed again and again while a slow
    handoff iterates: every range ends with its newest content."""
    iface, base = iface_base
    src = start_from_base("src", str(tmp_path), base, disk_interface=iface)
    vms.append(src)
    run_workload(src, "mixed")
    src.shell("(i=0; while true; do i=$((i+1)); "
              "dd if=/dev/urandom of=/mnt/race.$((i%3)) bs=64k count=40;"
              " rm -f /mnt/race.$(((i+1)%3)); sync; fstrim /mnt; done)"
              " >/dev/null 2>&1 &")
    wait_heartbeat_after(src, 3)
    dst = start_destination("dst", str(tmp_path), base, disk_interface=iface)
    vms.append(dst)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=8 * MIB)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    assert info["handoff"]["iteration"] >= 2, info["handoff"]
    assert info["handoff"]["discarded"] > 0, info["handoff"]
    assert_same_vm(src, dst)


@pytest.mark.parametrize("iface_base", ["virtio"], indirect=True)
def test_discard_ignore_is_warned(tmp_path, iface_base, vms):
    """With the default discard=ignore the guest's TRIMs never reach the
    image: the handoff says so instead of silently sending freed blocks."""
    iface, base = iface_base
    src = start_from_base("src", str(tmp_path), base, disk_interface=iface,
                          discard="ignore")
    vms.append(src)
    assert "has discard=ignore" in src.read_log()
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    wait_heartbeat_after(src, 1)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    assert info["handoff"]["discarded"] == 0
    assert_same_vm(src, dst)
