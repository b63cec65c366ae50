# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the filesystems of a disk are: an MBR (with logical partitions) or
a GPT partition table, or a filesystem on the whole disk.

Parsed here rather than with sfdisk: sfdisk needs a file or a device, the
disk is read through disk_reader, and the two formats are small.
"""

import struct
import uuid

SECTOR = 512
EXT_MAGIC_OFFSET = 1024 + 0x38
EXT_MAGIC = b"\x53\xef"

GPT_TYPES = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "44479540-f297-41b2-9af7-d131d5f0458a": "Linux root (x86)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux /home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
}
MBR_TYPES = {0x83: "Linux", 0x82: "Linux swap", 0x8e: "Linux LVM",
             0xef: "EFI System", 0x0c: "W95 FAT32 (LBA)", 0x07: "NTFS/exFAT",
             0xfd: "Linux RAID"}
MBR_EXTENDED = (0x05, 0x0F, 0x85)


class Partition:
    def __init__(self, name, number, start, size, type_name):
        self.name = name          # "p1", or None for a whole-disk filesystem
        self.number = number
        self.start = start        # bytes
        self.size = size          # bytes
        self.type = type_name

    def to_json(self):
        return {"name": self.name, "number": self.number,
                "start": self.start, "size": self.size, "type": self.type}


class Layout:
    def __init__(self, scheme, partitions, disk_size, notes=()):
        self.scheme = scheme        # "gpt", "mbr" or "none"
        self.partitions = partitions
        self.disk_size = disk_size
        self.notes = list(notes)


def has_ext_magic(reader, offset):
    return reader.read(offset + EXT_MAGIC_OFFSET, 2) == EXT_MAGIC


def _gpt(reader, size, lba_size, notes):
    for header_at in (lba_size, size - lba_size):   # primary, then backup
        hdr = reader.read(header_at, 92)
        if hdr[:8] != b"EFI PART":
            continue
        entries_lba, count, entry_size = struct.unpack_from("<QII", hdr, 72)
        if not 128 <= entry_size <= 4096 or count > 65536:
            continue
        if header_at != lba_size:
            notes.append("primary GPT header unreadable; using the backup")
        table = reader.read(entries_lba * lba_size, count * entry_size)
        parts = []
        for i in range(count):
            e = table[i * entry_size:(i + 1) * entry_size]
            type_guid = uuid.UUID(bytes_le=bytes(e[:16]))
            if type_guid.int == 0:
                continue
            first, last = struct.unpack_from("<QQ", e, 32)
            name = e[56:128].decode("utf-16-le", "replace").rstrip("\0")
            kind = GPT_TYPES.get(str(type_guid), str(type_guid))
            if name:
                kind += f" \"{name}\""
            parts.append(Partition(f"p{i + 1}", i + 1, first * lba_size,
                                   (last - first + 1) * lba_size, kind))
        return parts
    return None


def _mbr(reader, sector0, size, notes):
    parts = []
    for i in range(4):
        e = sector0[446 + 16 * i:446 + 16 * (i + 1)]
        ptype = e[4]
        start, count = struct.unpack_from("<II", e, 8)
        if ptype == 0 or count == 0:
            continue
        if ptype in MBR_EXTENDED:
            parts += _logical(reader, start, size, notes)
            continue
        parts.append(Partition(f"p{i + 1}", i + 1, start * SECTOR,
                               count * SECTOR,
                               MBR_TYPES.get(ptype, f"type 0x{ptype:02x}")))
    return parts


def _logical(reader, ext_start, size, notes):
    parts = []
    ebr_lba, number, seen = ext_start, 5, set()
    while ebr_lba and ebr_lba not in seen and ebr_lba * SECTOR < size:
        seen.add(ebr_lba)
        ebr = reader.read(ebr_lba * SECTOR, SECTOR)
        if ebr[510:512] != b"\x55\xaa":
            notes.append("broken extended partition chain at sector "
                         f"{ebr_lba}")
            break
        e1, e2 = ebr[446:462], ebr[462:478]
        start, count = struct.unpack_from("<II", e1, 8)
        if e1[4] and count:
            kind = MBR_TYPES.get(e1[4], f"type 0x{e1[4]:02x}")
            parts.append(Partition(f"p{number}", number,
                                   (ebr_lba + start) * SECTOR, count * SECTOR,
                                   kind))
            number += 1
        nxt = struct.unpack_from("<I", e2, 8)[0]
        ebr_lba = ext_start + nxt if e2[4] in MBR_EXTENDED and nxt else 0
    return parts


def read_layout(reader, size):
    """The disk's partitions, or one pseudo-partition for a whole-disk
    filesystem; Layout.partitions is empty when neither is found."""
    notes = []
    sector0 = reader.read(0, SECTOR)
    if sector0[510:512] == b"\x55\xaa":
        types = [sector0[446 + 16 * i + 4] for i in range(4)]
        if 0xEE in types:
            for lba_size in (512, 4096):
                parts = _gpt(reader, size, lba_size, notes)
                if parts is not None:
                    return Layout("gpt", _sane(parts, size, notes), size,
                                  notes)
            notes.append("protective MBR but no GPT header")
        parts = _mbr(reader, sector0, size, notes)
        if parts:
            return Layout("mbr", _sane(parts, size, notes), size, notes)
    if has_ext_magic(reader, 0):
        return Layout("none", [Partition(None, None, 0, size, "whole disk")],
                      size, notes)
    return Layout("none", [], size, notes)


def _sane(parts, size, notes):
    out = []
    for p in sorted(parts, key=lambda p: p.start):
        if p.start >= size:
            notes.append(f"partition {p.name} starts beyond the disk's end")
            continue
        if p.start + p.size > size:
            notes.append(f"partition {p.name} ends beyond the disk's end")
            p.size = size - p.start
        out.append(p)
    return out
