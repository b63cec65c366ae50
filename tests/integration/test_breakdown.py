# SPDX-License-Identifier: GPL-2.0-or-later
"""scripts/vm-breakdown.py: what a VM's modified disk state is made of.

Two kinds of tests:

- On the real test guest: a VM resumed from a base writes a file of known
  size into a known directory (and, in a second VM, deletes it again; in a
  third, deletes and trims it), is stopped, and the tool must find those
  bytes where they are.
- On small disks built here (bare ext4, ext3 with indirect blocks and
  1 KiB blocks, MBR, GPT, logical partitions, a partition at sector 63,
  compressed clusters, a journal with pending transactions):
  the overlay holds exactly the clusters that differ from the base.

Every breakdown is also checked byte for byte against e2fsprogs as the
oracle: the overlay is copied to a raw image, e2fsck replays its journal,
and debugfs says for each modified block which inode owns it (icheck), its
path (ncheck) and whether the bitmap marks it in use (testb). The tool
reads the overlay itself and replays the journal in memory; both must
agree exactly.

The guest runs shell commands typed on its console as "sh TAG COMMAND"
(tests/guest/init, GuestVM.shell).
"""

import json
import os
import random
import re
import shutil
import struct
import subprocess
import time
import uuid
import zlib

import pytest

from qemu_handoff.bases import (create_base, start_from_base,
                                wait_heartbeat_after)
from qemu_handoff.guest import QEMU_IMG, QEMU_IO
from qemu_handoff.paths import TOP

TOOL = os.path.join(TOP, "scripts", "vm-breakdown.py")
MIB = 1 << 20
CLUSTER = 64 << 10


# --- the tool and its oracle -------------------------------------------------

def breakdown(overlay, *args):
    """Runs the tool (as users do: the script, its shebang) with --json."""
    start = time.monotonic()
    proc = subprocess.run([TOOL, overlay, "--json", "-q", *args],
                          capture_output=True, text=True)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    print(f"vm-breakdown {os.path.basename(overlay)} {' '.join(args)}: "
          f"{seconds:.2f} s")
    disk = doc["disk"]
    assert sum(disk["categories"].values()) == disk["data_bytes"], disk
    assert disk["modified_bytes"] == disk["data_bytes"] + disk["zero_bytes"]
    assert doc["memory"] is None
    return doc


def top_layer(overlay):
    """(data ranges, zero ranges) of the overlay's top layer."""
    out = subprocess.run([QEMU_IMG, "map", "--output=json", overlay],
                         check=True, capture_output=True, text=True).stdout
    data, zero = [], []
    for e in json.loads(out):
        if e["depth"] == 0:
            (data if e["data"] else zero).append(
                (e["start"], e["start"] + e["length"]))
    return data, zero


def debugfs(image, commands):
    """Runs debugfs commands (a list) on @image; returns stdout."""
    script = image + ".cmds"
    with open(script, "w") as f:
        f.write("\n".join(commands) + "\n")
    proc = subprocess.run(["debugfs", "-f", script, image],
                          capture_output=True, text=True)
    os.unlink(script)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def oracle(fs_image, fs_offset, data_ranges, depth=3):
    """The breakdown e2fsprogs gives for a filesystem image (recovered, at
    @fs_offset of the disk) and the disk's modified data ranges."""
    bs = int(re.search(r"Block size:\s+(\d+)", subprocess.run(
        ["dumpe2fs", "-h", fs_image], capture_output=True,
        text=True).stdout).group(1))
    fs_size = os.path.getsize(fs_image)
    blocks = {}
    for s, e in data_ranges:
        s, e = max(s - fs_offset, 0), min(e - fs_offset, fs_size)
        b = s // bs
        while b * bs < e:
            blocks[b] = blocks.get(b, 0) + min(e, (b + 1) * bs) - \
                max(s, b * bs)
            b += 1
    nums = sorted(blocks)
    owner = {}
    for i in range(0, len(nums), 500):
        out = debugfs(fs_image, ["icheck " + " ".join(map(str,
                                                            nums[i:i + 500]))])
        for line in out.splitlines():
            m = re.match(r"^(\d+)\s+(\d+)$", line)
            if m:
                owner[int(m.group(1))] = int(m.group(2))
    inodes = sorted(set(owner.values()))
    paths, dirs = {2: "/"}, set()   # ncheck never names the root
    if inodes:
        out = debugfs(fs_image, ["ncheck " + " ".join(map(str, inodes))])
        for line in out.splitlines():
            m = re.match(r"^(\d+)\s+(/.*)$", line)
            if m:
                paths.setdefault(int(m.group(1)), m.group(2))
        out = debugfs(fs_image, [f"stat <{i}>" for i in inodes])
        for i, m in zip(inodes, re.finditer(r"Type: (\w+)", out)):
            if m.group(1) == "directory":
                dirs.add(i)
    free_blocks = [b for b in nums if b not in owner]
    in_use = set()
    if free_blocks:
        out = debugfs(fs_image, [f"testb {b}" for b in free_blocks])
        in_use = {int(b) for b in re.findall(r"Block (\d+) marked in use",
                                             out)}
    in_use.add(0)   # testb refuses block 0: the boot block / superblock
    cats = {"files": 0, "unnamed_files": 0, "journal": 0, "metadata": 0,
            "free_blocks_deleted_files": 0}
    dirs_bytes = {}
    for b, n in blocks.items():
        ino = owner.get(b)
        if ino is None:
            key = "metadata" if b in in_use else "free_blocks_deleted_files"
            cats[key] += n
        elif ino == 8:
            cats["journal"] += n
        elif ino < 11 and ino != 2:
            cats["metadata"] += n
        elif ino not in paths:
            cats["unnamed_files"] += n
        else:
            cats["files"] += n
            parts = [p for p in paths[ino].split("/") if p]
            if ino not in dirs:
                parts = parts[:-1]
            key = "/".join(parts[:depth]) or "/"
            dirs_bytes[key] = dirs_bytes.get(key, 0) + n
    return cats, dirs_bytes


def assert_matches_oracle(doc, fs_image, fs_offset, data_ranges):
    cats, dirs = oracle(fs_image, fs_offset, data_ranges, doc["disk"]["depth"])
    got = doc["disk"]["categories"]
    for key, n in cats.items():
        assert got[key] == n, (key, got, cats)
    got_dirs = {d["path"]: d["bytes"] for d in doc["disk"]["directories"]}
    assert got_dirs == dirs


def recovered_copy(overlay, path):
    """The overlay as a raw image, and a copy of it whose journal e2fsck
    replayed: (as stored, recovered)."""
    stored = path + ".stored"
    subprocess.run([QEMU_IMG, "convert", "-O", "raw", overlay, stored],
                   check=True, capture_output=True)
    shutil.copy(stored, path)
    proc = subprocess.run(["e2fsck", "-E", "journal_only", "-p", path],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return stored, path


def dir_bytes(doc, path):
    return sum(d["bytes"] for d in doc["disk"]["directories"]
               if d["path"] == path)


# --- the test guest ---------------------------------------------------------

@pytest.fixture(scope="module")
def base(module_tmp):
    work = module_tmp / "breakdown-base"
    return create_base(str(work), str(work / "base"))


def guest_sh(vm, command, timeout=120):
    """Runs a shell command in the guest and waits until it is done."""
    vm.shell(command, timeout=timeout)


DIR = "/mnt/modules/drivers/net/ethernet"
FILE = DIR + "/breakdown-test.bin"
KEY = "modules/drivers/net"          # DIR cut to 3 components
SLACK = 3 * CLUSTER


def start_vm(name, tmp_path, base, vms, discard):
    """A user VM resumed from the base on a fresh overlay, with the drive's
    discard option set here: "ignore" (the guest's TRIMs stop at QEMU) or
    "unmap" (they reach the overlay as zero clusters over the base)."""
    vm = start_from_base(name, str(tmp_path), base, discard=discard)
    vms.append(vm)
    wait_heartbeat_after(vm, 1)
    return vm


def write_big_file(vm):
    guest_sh(vm, f"dd if=/dev/urandom of={FILE} bs=1M count=8 2>/dev/null"
                 " && sync")


def test_written_file_is_attributed_to_its_directory(tmp_path, base, vms):
    vm = start_vm("written", tmp_path, base, vms, "ignore")
    write_big_file(vm)
    vm.stop()
    overlay = vm.disk

    doc = breakdown(overlay)
    disk = doc["disk"]
    assert disk["modified_bytes"] >= 8 * MIB
    assert disk["partition_table"] == "none"
    fs = disk["filesystems"][0]
    assert fs["type"] == "ext4" and fs["label"] == "handoff-base"
    # The file's 8 MiB, plus what shares a cluster with the blocks the
    # guest wrote: the file's first and last clusters and the directory
    # block that got the new entry; their other blocks, copied from the
    # base, belong to neighbouring files (often of the same directory).
    assert 8 * MIB <= dir_bytes(doc, KEY) <= 8 * MIB + SLACK, \
        disk["directories"][:5]
    assert disk["directories"][0]["path"] == KEY
    files = {f["path"]: f["bytes"] for f in disk["files"]}
    assert files[FILE[len("/mnt"):]] == 8 * MIB
    # Deeper: the file's own directory.
    deeper = breakdown(overlay, "--depth", "4")
    assert 8 * MIB <= dir_bytes(deeper, KEY + "/ethernet") <= 8 * MIB + SLACK
    assert disk["categories"]["free_blocks_deleted_files"] < 1 * MIB

    assert_agrees_with_e2fsprogs(tmp_path, "written", overlay, doc)


def test_deleted_file_shows_as_free_blocks(tmp_path, base, vms):
    vm = start_vm("deleted", tmp_path, base, vms, "ignore")
    write_big_file(vm)
    guest_sh(vm, f"rm {FILE} && sync")
    vm.stop()
    overlay = vm.disk

    doc = breakdown(overlay)
    disk = doc["disk"]
    # The guest does not trim (no discard mount option, no fstrim, and
    # discard=ignore on the drive): the file's clusters stay, free.
    assert disk["zero_bytes"] == 0
    assert disk["categories"]["free_blocks_deleted_files"] >= 8 * MIB
    assert disk["modified_bytes"] >= 8 * MIB
    assert dir_bytes(doc, KEY) < 1 * MIB
    assert not any(f["path"].endswith("breakdown-test.bin")
                   for f in disk["files"])

    assert_agrees_with_e2fsprogs(tmp_path, "deleted", overlay, doc)


def test_trimmed_file_leaves_zero_clusters(tmp_path, base, vms):
    vm = start_vm("trimmed", tmp_path, base, vms, "unmap")
    write_big_file(vm)
    guest_sh(vm, f"rm {FILE} && sync && fstrim /mnt && sync")
    vm.stop()
    overlay = vm.disk

    doc = breakdown(overlay)
    disk = doc["disk"]
    # fstrim discards every free block, the file's and the base's free
    # space: zero clusters, not data. Only partial clusters at the edges
    # of free extents keep data.
    assert disk["zero_bytes"] >= 8 * MIB
    assert disk["categories"]["free_blocks_deleted_files"] < 1 * MIB

    assert_agrees_with_e2fsprogs(tmp_path, "trimmed", overlay, doc)


def assert_agrees_with_e2fsprogs(tmp_path, name, overlay, doc):
    """The breakdown @doc of @overlay is e2fsprogs' view of its blocks, and
    the tool's in-memory journal replay is e2fsck's."""
    data, _zero = top_layer(overlay)
    stored, raw = recovered_copy(overlay, str(tmp_path / f"{name}.raw"))
    assert_matches_oracle(doc, raw, 0, data)
    assert_replay_matches(overlay, stored, raw)


def assert_replay_matches(overlay, stored, recovered):
    """The tool's in-memory journal replay writes what e2fsck wrote: the
    same blocks with the same bytes. Not compared: the journal's own
    blocks (e2fsck marks the journal empty) and the primary superblock's
    block (e2fsck clears needs_recovery in it)."""
    from qemu_handoff.breakdown import ext4, jbd2
    from qemu_handoff.breakdown.disk_map import find_qemu_img, read_disk_map
    from qemu_handoff.breakdown.disk_reader import open_disk
    reader = open_disk(read_disk_map(overlay, find_qemu_img()))
    try:
        fs = ext4.Ext4(reader, 0, reader.size)
        warnings = []
        rep = jbd2.replay(fs, warnings)
        runs, _ = fs.mapping(fs.inode(fs.journal_inum))
        journal = {p + k for _l, p, n in runs for k in range(n)}
    finally:
        reader.close()
    print(f"journal: {rep.to_json()} {warnings}")
    assert rep.state in ("replayed", "clean"), (rep.state, warnings)
    assert not warnings
    bs = fs.block_size
    changed = set()
    with open(stored, "rb") as a, open(recovered, "rb") as b:
        block = 0
        while True:
            x, y = a.read(bs), b.read(bs)
            if not x:
                break
            if x != y:
                changed.add(block)
            block += 1
        skip = journal | {0}
        assert changed - skip <= set(rep.blocks) - skip, \
            sorted(changed - set(rep.blocks))[:20]
        for block, data in rep.blocks.items():
            if block in skip:
                continue
            b.seek(block * bs)
            assert b.read(bs) == data, block
    return rep


# --- small disks built here -------------------------------------------------

def _rand(n, seed):
    return random.Random(seed).randbytes(n)


def _tree(root):
    files = {
        "etc/app/app.conf": b"answer = 42\n" * 10,
        "usr/lib/pkg/libone.so": _rand(300 << 10, 1),
        "usr/lib/pkg/sub/deep/data.bin": _rand(100 << 10, 2),
        "var/log/big.log": b"log line\n" * (2 * MIB // 9),
        "docs/README": b"readme\n",
    }
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def make_fs(tmp, kind, size_mib=24):
    """(base fs image, modified fs image): the modified one has new files
    in new and existing directories, a file written then deleted, and a
    changed block of an existing file."""
    tree = os.path.join(tmp, "tree")
    _tree(tree)
    base = os.path.join(tmp, "base-fs.raw")
    mkfs = {"ext4": ["mkfs.ext4", "-b", "4096"],
            "ext3": ["mkfs.ext3", "-b", "1024"]}[kind]
    subprocess.run([*mkfs, "-q", "-F", "-d", tree, "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                    base, f"{size_mib}M"], check=True, capture_output=True)
    mod = os.path.join(tmp, "mod-fs.raw")
    shutil.copy(base, mod)
    host = {}
    for name, n, seed in (("new", 1 * MIB, 3), ("apt", 512 << 10, 4),
                          ("gone", 768 << 10, 5)):
        host[name] = os.path.join(tmp, name)
        with open(host[name], "wb") as f:
            f.write(_rand(n, seed))
    debugfs_w(mod, [f"write {host['new']} usr/lib/pkg/new.bin",
                    "mkdir var/cache", "mkdir var/cache/apt",
                    f"write {host['apt']} var/cache/apt/pkgcache.bin",
                    f"write {host['gone']} gone.bin"])
    # debugfs rm frees the blocks but leaves their (new) data: what a guest
    # deleting a file it wrote leaves in the overlay.
    debugfs_w(mod, ["rm gone.bin"])
    bs = 4096 if kind == "ext4" else 1024
    out = debugfs(mod, ["bmap /var/log/big.log 3"])
    blk = int(out.strip().split()[-1])
    with open(mod, "r+b") as f:
        f.seek(blk * bs)
        f.write(b"CHANGED " * (bs // 8))
    return base, mod


def debugfs_w(image, commands):
    proc = subprocess.run(["debugfs", "-w", "-f", "-", image],
                          input="\n".join(commands) + "\n",
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "rror" not in proc.stderr.replace(
        "debugfs 1.", ""), proc.stderr


def _mbr(parts, boot_code=b""):
    """Sector 0 with up to 4 primary entries (start LBA, sectors, type)."""
    s = bytearray(512)
    s[:len(boot_code)] = boot_code
    for i, (start, count, ptype) in enumerate(parts):
        e = struct.pack("<B3sB3sII", 0, b"\0\0\0", ptype, b"\0\0\0", start,
                        count)
        s[446 + 16 * i:462 + 16 * i] = e
    s[510:512] = b"\x55\xaa"
    return bytes(s)


def _gpt(disk_sectors, parts):
    """Protective MBR, primary GPT header and entries (LBA 0-33)."""
    entries = bytearray(128 * 128)
    for i, (first, last, type_guid, name) in enumerate(parts):
        e = (uuid.UUID(type_guid).bytes_le + uuid.uuid4().bytes_le +
             struct.pack("<QQQ", first, last, 0) +
             name.encode("utf-16-le").ljust(72, b"\0"))
        entries[128 * i:128 * (i + 1)] = e
    hdr = bytearray(struct.pack(
        "<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1,
        disk_sectors - 1, 34, disk_sectors - 34, uuid.uuid4().bytes_le, 2,
        128, 128, zlib.crc32(entries)))
    struct.pack_into("<I", hdr, 16, zlib.crc32(hdr))
    pmbr = _mbr([(1, min(disk_sectors - 1, 0xFFFFFFFF), 0xEE)])
    return pmbr + bytes(hdr).ljust(512, b"\0") + bytes(entries)


LINUX_FS = "0fc63daf-8483-4772-8e79-3d69d8477de4"
SWAP = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"


def make_disk(tmp, layout, fs_image, modified):
    """A disk image holding @fs_image as @layout says; returns (path, fs
    offset). The modified disk also has a changed boot area and a changed
    swap partition after the filesystem's."""
    fs = open(fs_image, "rb").read()
    if layout in ("bare-ext4", "bare-ext3"):
        path = os.path.join(tmp, ("mod" if modified else "base") + ".raw")
        shutil.copy(fs_image, path)
        return path, 0
    fs_sectors = len(fs) // 512
    swap_sectors = 2048
    if layout == "mbr-logical":
        # p1 extended from sector 2048: EBR, p5 (ext4) 2048 sectors
        # further, a second EBR after it, p6 (swap) 2048 sectors further.
        ext_start = 2048
        start = ext_start + 2048
        ebr2 = start + fs_sectors
        swap_start = ebr2 + 2048
        total = swap_start + swap_sectors + 2048
        disk = bytearray(total * 512)
        disk[:512] = _mbr([(ext_start, total - 2048 - ext_start, 0x05)])
        disk[ext_start * 512:(ext_start + 1) * 512] = _mbr(
            [(start - ext_start, fs_sectors, 0x83),
             (ebr2 - ext_start, swap_start + swap_sectors - ebr2, 0x05)])
        disk[ebr2 * 512:(ebr2 + 1) * 512] = _mbr(
            [(swap_start - ebr2, swap_sectors, 0x82)])
    else:
        start = 63 if layout == "mbr-sector63" else 2048
        swap_start = start + fs_sectors + 1
        total = swap_start + swap_sectors + 2048
        disk = bytearray(total * 512)
        if layout == "gpt":
            disk[:34 * 512] = _gpt(total, [
                (start, start + fs_sectors - 1, LINUX_FS, "root"),
                (swap_start, swap_start + swap_sectors - 1, SWAP, "swap")])
        else:
            disk[:512] = _mbr([(start, fs_sectors, 0x83),
                               (swap_start, swap_sectors, 0x82)])
    disk[start * 512:start * 512 + len(fs)] = fs
    if modified:
        disk[:64] = _rand(64, 6)                   # boot code
        disk[swap_start * 512:(swap_start + 256) * 512] = _rand(128 << 10, 7)
    path = os.path.join(tmp, ("mod" if modified else "base") + ".raw")
    with open(path, "wb") as f:
        f.write(disk)
    return path, start * 512


def make_overlay(tmp, base_disk, mod_disk, compressed=False):
    """A qcow2 overlay on @base_disk holding exactly the clusters in which
    @mod_disk differs (written with qemu-io, compressed if asked)."""
    overlay = os.path.join(tmp, "overlay.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", base_disk,
                    "-F", "raw", overlay], check=True, capture_output=True)
    cmds = []
    chunks = os.path.join(tmp, "chunks")
    os.makedirs(chunks)
    with open(base_disk, "rb") as a, open(mod_disk, "rb") as b:
        off = 0
        while True:
            x, y = a.read(CLUSTER), b.read(CLUSTER)
            if not y:
                break
            if x != y:
                chunk = os.path.join(chunks, str(off))
                with open(chunk, "wb") as f:
                    f.write(y)
                cmds += ["-c", f"write -q {'-c ' if compressed else ''}"
                               f"-s {chunk} {off} {len(y)}"]
            off += len(y)
    for i in range(0, len(cmds), 200):
        subprocess.run([QEMU_IO, *cmds[i:i + 200], overlay], check=True,
                       capture_output=True)
    return overlay


@pytest.mark.parametrize("layout", ["bare-ext4", "bare-ext3", "mbr", "gpt",
                                    "mbr-sector63", "mbr-logical"])
def test_built_disks_match_e2fsprogs(tmp_path, layout):
    tmp = str(tmp_path)
    base_fs, mod_fs = make_fs(tmp, "ext3" if layout == "bare-ext3" else "ext4")
    base_disk, fs_offset = make_disk(tmp, layout, base_fs, False)
    mod_disk, _ = make_disk(tmp, layout, mod_fs, True)
    overlay = make_overlay(tmp, base_disk, mod_disk)

    doc = breakdown(overlay)
    disk = doc["disk"]
    data, _ = top_layer(overlay)
    assert_matches_oracle(doc, mod_fs, fs_offset, data)

    dirs = {d["path"]: d["bytes"] for d in disk["directories"]}
    assert dirs["usr/lib/pkg"] >= 1 * MIB           # new.bin
    assert dirs["var/cache/apt"] >= 512 << 10       # pkgcache.bin
    assert dirs["var/log"] >= (1024 if layout == "bare-ext3" else 4096)
    assert disk["categories"]["free_blocks_deleted_files"] >= 768 << 10
    outside = {o["what"]: o["bytes"] for o in disk["outside"]}
    if layout.startswith("bare"):
        assert disk["partition_table"] == "none" and not outside
    else:
        assert disk["partition_table"] == ("gpt" if layout == "gpt"
                                           else "mbr")
        assert outside["disk start (partition table, boot loader)"] > 0
        fs_part, swap_part = ("p5", "p6") if layout == "mbr-logical" else \
            ("p1", "p2")
        swap = [n for what, n in outside.items()
                if f"partition {swap_part} " in what]
        assert swap and swap[0] >= 128 << 10, outside
        assert disk["filesystems"][0]["partition"] == fs_part
    assert disk["filesystems"][0]["type"] == ("ext3" if layout == "bare-ext3"
                                              else "ext4")


def test_compressed_clusters_are_read_from_a_raw_copy(tmp_path):
    """qemu-img map gives no offset for compressed clusters: the tool
    copies the disk to a raw file, and cleans it up."""
    tmp = str(tmp_path)
    base_fs, mod_fs = make_fs(tmp, "ext4")
    overlay = make_overlay(tmp, base_fs, mod_fs, compressed=True)
    tmpdir = tmp_path / "scratch"
    tmpdir.mkdir()
    doc = breakdown(overlay, "--tmpdir", str(tmpdir))
    assert doc["disk"]["read_method"] == "raw copy"
    assert list(tmpdir.iterdir()) == []
    data, _ = top_layer(overlay)
    assert_matches_oracle(doc, mod_fs, 0, data)


@pytest.mark.parametrize("jopen", ["jo", "jo -c"])
def test_journal_transactions_are_replayed(tmp_path, jopen):
    """Metadata committed to the journal but not yet at home (written with
    debugfs journal_write, without and with journal checksums v3) is seen
    as e2fsck's recovery writes it: a revoked block and an uncommitted
    transaction are not replayed."""
    tmp = str(tmp_path)
    base_fs, mod_fs = make_fs(tmp, "ext4")
    # What the filesystem becomes with one more file...
    after = os.path.join(tmp, "after.raw")
    shutil.copy(mod_fs, after)
    late = os.path.join(tmp, "late")
    with open(late, "wb") as f:
        f.write(_rand(300 << 10, 8))
    debugfs_w(after, [f"write {late} late.bin"])
    data_blocks = {int(b) for b in debugfs(
        after, ["blocks /late.bin"]).split()[-75:] if b.isdigit()}
    assert len(data_blocks) == 75
    with open(mod_fs, "rb") as f:
        before = f.read()
    with open(after, "rb") as f:
        now = f.read()
    bs = 4096
    changed = [b for b in range(len(now) // bs)
               if before[b * bs:(b + 1) * bs] != now[b * bs:(b + 1) * bs]]
    meta = [b for b in changed if b not in data_blocks]
    assert meta and data_blocks <= set(changed)
    # ... its data written in place (as ordered mode does), its metadata
    # only in the journal.
    with open(mod_fs, "r+b") as f:
        for b in data_blocks:
            f.seek(b * bs)
            f.write(now[b * bs:(b + 1) * bs])
    metafile, junk = os.path.join(tmp, "meta"), os.path.join(tmp, "junk")
    with open(metafile, "wb") as f:
        f.write(b"".join(now[b * bs:(b + 1) * bs] for b in meta))
    with open(junk, "wb") as f:
        f.write(b"JUNK" * (bs // 4))
    total_blocks = len(now) // bs
    j1, j2, j3 = total_blocks - 3, total_blocks - 2, total_blocks - 1
    debugfs_w(mod_fs, [jopen,
                       f"jw -b {','.join(map(str, meta))} {metafile}",
                       f"jw -b {j1} {junk}",       # revoked just below
                       f"jw -r {j1} {junk}",
                       f"jw -b {j2} {junk}",
                       f"jw -b {j3} {junk} -c",    # never committed
                       "jc"])
    sb = subprocess.run(["dumpe2fs", "-h", mod_fs], capture_output=True,
                        text=True).stdout
    assert "needs_recovery" in sb, sb
    overlay = make_overlay(tmp, base_fs, mod_fs)

    doc = breakdown(overlay)
    j = doc["disk"]["filesystems"][0]["journal"]
    assert j["state"] == "replayed" and j["transactions"] == 4, j
    files = {f["path"]: f["bytes"] for f in doc["disk"]["files"]}
    assert files["/late.bin"] == 300 << 10
    stored, recovered = recovered_copy(overlay,
                                       os.path.join(tmp, "recovered.raw"))
    rep = assert_replay_matches(overlay, stored, recovered)
    assert j2 in rep.blocks and j1 not in rep.blocks and j3 not in rep.blocks
    data, _ = top_layer(overlay)
    assert_matches_oracle(doc, recovered, 0, data)
    # Without the replay, the new file's blocks are free in the old bitmap.
    stale = breakdown(overlay, "--no-journal")
    assert stale["disk"]["categories"]["free_blocks_deleted_files"] >= \
        doc["disk"]["categories"]["free_blocks_deleted_files"] + (300 << 10)


def test_errors_are_clear(tmp_path):
    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"\0" * MIB)
    proc = subprocess.run([TOOL, str(raw)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "not a qcow2 overlay" in proc.stderr
    lone = str(tmp_path / "lone.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", lone, "1M"],
                   check=True)
    proc = subprocess.run([TOOL, lone], capture_output=True, text=True)
    assert proc.returncode == 1 and "has no backing file" in proc.stderr
    empty = str(tmp_path / "on-zeros.qcow2")
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", str(raw),
                    "-F", "raw", empty], check=True)
    proc = subprocess.run([TOOL, empty], capture_output=True, text=True)
    assert proc.returncode == 1 and "no ext2/3/4 filesystem" in proc.stderr
    proc = subprocess.run([TOOL, str(tmp_path / "missing.qcow2")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    proc = subprocess.run([TOOL, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "EXIT STATUS" in proc.stdout
