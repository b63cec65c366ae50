# SPDX-License-Identifier: GPL-2.0-or-later
"""A read-only reader of ext2, ext3 and ext4 filesystems.

It reads only metadata, through a disk reader (disk_reader.py), at a byte
offset on the virtual disk: the superblock, the group descriptors, the
bitmaps, the used part of each inode table, extent tree and indirect
blocks, directory blocks. Nothing is mounted and nothing is written.

Blocks the journal would replay (jbd2.py) are laid over the disk's blocks
with set_patch(): what is read then is what the guest would see after
recovery.

Layout facts follow the kernel's fs/ext4/ext4.h and e2fsprogs' ext2_fs.h.
"""

import bisect
import struct

SB_OFFSET = 1024
EXT_MAGIC = 0xEF53

# s_feature_compat
COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
# s_feature_incompat
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
INCOMPAT_INLINE_DATA = 0x8000
# s_feature_ro_compat
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

# bg_flags
BG_INODE_UNINIT = 0x1
BG_BLOCK_UNINIT = 0x2

# i_flags
EXTENTS_FL = 0x80000
EA_INODE_FL = 0x200000
INLINE_DATA_FL = 0x10000000

S_IFMT = 0xF000
S_IFDIR = 0x4000
S_IFREG = 0x8000
S_IFLNK = 0xA000

ROOT_INO = 2
JOURNAL_INO = 8

EXTENT_MAGIC = 0xF30A

# The inode fields used here, from offset 0 to 120 (fits a 128-byte inode).
_INODE = struct.Struct("<H2xI18xH4xI4x60s4xII4x2xH")


class Unsupported(Exception):
    """A filesystem this reader does not handle (or not one at all)."""


class Inode:
    __slots__ = ("ino", "mode", "size", "links", "flags", "i_block",
                 "file_acl")

    def __init__(self, ino, raw):
        (self.mode, size_lo, self.links, self.flags, self.i_block,
         acl_lo, size_hi, acl_hi) = _INODE.unpack_from(raw)
        self.ino = ino
        self.size = size_hi << 32 | size_lo
        self.file_acl = acl_hi << 32 | acl_lo

    @property
    def kind(self):
        return self.mode & S_IFMT

    def is_dir(self):
        return self.kind == S_IFDIR


class Group:
    __slots__ = ("number", "block_bitmap", "inode_bitmap", "inode_table",
                 "flags", "itable_unused")


class Ext4:
    def __init__(self, reader, offset, size):
        """@reader reads the virtual disk; the filesystem starts at byte
        @offset and its container (partition or disk) is @size bytes."""
        self.reader = reader
        self.offset = offset
        self.container_size = size
        self._patch = {}
        self._patch_keys = []
        self._bitmaps = {}
        self._load()

    # --- superblock and groups ----------------------------------------------

    def _load(self):
        sb = self._read_bytes(SB_OFFSET, 1024)
        (magic,) = struct.unpack_from("<H", sb, 0x38)
        if magic != EXT_MAGIC:
            raise Unsupported("no ext2/3/4 superblock")
        u32 = lambda off: struct.unpack_from("<I", sb, off)[0]  # noqa: E731
        u16 = lambda off: struct.unpack_from("<H", sb, off)[0]  # noqa: E731
        self.inodes_count = u32(0x0)
        self.first_data_block = u32(0x14)
        log_bs = u32(0x18)
        if log_bs > 6:
            raise Unsupported(f"block size 2^{10 + log_bs} is implausible")
        self.block_size = 1024 << log_bs
        self.blocks_per_group = u32(0x20)
        self.inodes_per_group = u32(0x28)
        self.state = u16(0x3A)
        self.rev_level = u32(0x4C)
        self.compat = u32(0x5C)
        self.incompat = u32(0x60)
        self.ro_compat = u32(0x64)
        self.uuid = sb[0x68:0x78]
        self.label = sb[0x78:0x88].split(b"\0")[0].decode("utf-8", "replace")
        if self.rev_level == 0:
            self.first_ino, self.inode_size = 11, 128
        else:
            self.first_ino, self.inode_size = u32(0x54), u16(0x58)
        self.reserved_gdt_blocks = u16(0xCE)
        self.journal_inum = u32(0xE0)
        self.desc_size = u16(0xFE) if self.incompat & INCOMPAT_64BIT else 32
        if self.desc_size < 32:
            self.desc_size = 32
        self.first_meta_bg = u32(0x104)
        blocks_hi = u32(0x150) if self.incompat & INCOMPAT_64BIT else 0
        self.blocks_count = blocks_hi << 32 | u32(0x4)
        self.mmp_block = struct.unpack_from("<Q", sb, 0x168)[0]
        self.backup_bgs = (u32(0x24C), u32(0x250))
        self.special_inodes = {}
        for off, what in ((0x240, "user quota"), (0x244, "group quota"),
                          (0x26C, "project quota"), (0x280, "orphan file")):
            if u32(off):
                self.special_inodes[u32(off)] = what

        if self.ro_compat & RO_COMPAT_BIGALLOC:
            raise Unsupported("bigalloc (clustered allocation) is not "
                              "supported")
        if not self.blocks_per_group or not self.inodes_per_group or \
                self.inode_size < 128 or self.blocks_count == 0:
            raise Unsupported("corrupt superblock")
        self.csum_groups = bool(self.ro_compat & (RO_COMPAT_GDT_CSUM |
                                                  RO_COMPAT_METADATA_CSUM))
        self.group_count = -(-(self.blocks_count - self.first_data_block)
                             // self.blocks_per_group)
        self.descs_per_block = self.block_size // self.desc_size
        self.inode_blocks_per_group = -(-self.inodes_per_group *
                                        self.inode_size // self.block_size)
        self._load_groups()

    @property
    def kind(self):
        if self.incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT |
                            INCOMPAT_INLINE_DATA) or self.ro_compat & ~0x3:
            return "ext4"
        return "ext3" if self.compat & COMPAT_HAS_JOURNAL else "ext2"

    @property
    def size(self):
        return self.blocks_count * self.block_size

    def needs_recovery(self):
        return bool(self.incompat & INCOMPAT_RECOVER)

    def has_super(self, group):
        if group == 0:
            return True
        if self.compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if group <= 1 or not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def group_first_block(self, group):
        return self.first_data_block + group * self.blocks_per_group

    def gdt_block_count(self):
        return -(-self.group_count // self.descs_per_block)

    def _gdt_block_location(self, i):
        if self.incompat & INCOMPAT_META_BG and i >= self.first_meta_bg:
            group = i * self.descs_per_block
            return self.group_first_block(group) + \
                (1 if self.has_super(group) else 0)
        return self.first_data_block + 1 + i

    def _load_groups(self):
        self.groups = []
        wide = self.desc_size >= 64
        for i in range(self.gdt_block_count()):
            data = self.read_blocks(self._gdt_block_location(i), 1)
            for j in range(self.descs_per_block):
                number = i * self.descs_per_block + j
                if number >= self.group_count:
                    break
                d = data[j * self.desc_size:(j + 1) * self.desc_size]
                g = Group()
                g.number = number
                bb, ib, it = struct.unpack_from("<III", d, 0)
                g.flags, = struct.unpack_from("<H", d, 0x12)
                g.itable_unused, = struct.unpack_from("<H", d, 0x1C)
                if wide:
                    bbh, ibh, ith = struct.unpack_from("<III", d, 0x20)
                    bb, ib, it = bbh << 32 | bb, ibh << 32 | ib, ith << 32 | it
                    hi, = struct.unpack_from("<H", d, 0x32)
                    g.itable_unused |= hi << 16
                g.block_bitmap, g.inode_bitmap, g.inode_table = bb, ib, it
                self.groups.append(g)
        self._bitmaps = {}

    def reload(self):
        """Re-reads the superblock and group descriptors (after set_patch)."""
        self._load()

    # --- reading blocks ------------------------------------------------------

    def set_patch(self, blocks):
        """@blocks: {block number: bytes} read instead of the disk's."""
        self._patch = dict(blocks)
        self._patch_keys = sorted(self._patch)
        self._bitmaps = {}

    def _read_bytes(self, offset, length):
        """Bytes at a byte offset of the filesystem, patch applied."""
        if not self._patch_keys:
            return self.reader.read(self.offset + offset, length)
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        data = self.read_blocks(first, last - first + 1)
        start = offset - first * bs
        return data[start:start + length]

    def read_blocks(self, block, count):
        bs = self.block_size
        data = self.reader.read(self.offset + block * bs, count * bs)
        if self._patch_keys:
            i = bisect.bisect_left(self._patch_keys, block)
            if i < len(self._patch_keys) and \
                    self._patch_keys[i] < block + count:
                buf = bytearray(data)
                while i < len(self._patch_keys) and \
                        self._patch_keys[i] < block + count:
                    b = self._patch_keys[i]
                    buf[(b - block) * bs:(b - block + 1) * bs] = self._patch[b]
                    i += 1
                data = bytes(buf)
        return data

    def read_raw_blocks(self, block, count):
        """Blocks as stored, without the journal's patch."""
        bs = self.block_size
        return self.reader.read(self.offset + block * bs, count * bs)

    # --- inodes --------------------------------------------------------------

    def inode(self, ino):
        group, index = divmod(ino - 1, self.inodes_per_group)
        g = self.groups[group]
        byte = index * self.inode_size
        blk = g.inode_table + byte // self.block_size
        data = self.read_blocks(blk, 1)
        off = byte % self.block_size
        return Inode(ino, data[off:off + self.inode_size])

    def used_inodes(self, progress=None):
        """Yields every inode the inode bitmaps mark in use (mode != 0)."""
        ipg, isz = self.inodes_per_group, self.inode_size
        for g in self.groups:
            if progress and g.number % 64 == 0:
                progress(g.number, self.group_count)
            if self.csum_groups and g.flags & BG_INODE_UNINIT:
                continue
            count = ipg
            if self.csum_groups:
                count = max(0, ipg - g.itable_unused)
            if count == 0:
                continue
            bitmap = self.read_blocks(g.inode_bitmap, 1)
            blocks = -(-count * isz // self.block_size)
            table = self.read_blocks(g.inode_table, blocks)
            base = g.number * ipg + 1
            for byte_i in range(-(-count // 8)):
                bits = bitmap[byte_i]
                if not bits:
                    continue
                for bit in range(8):
                    if not bits >> bit & 1:
                        continue
                    idx = byte_i * 8 + bit
                    if idx >= count:
                        break
                    raw = table[idx * isz:idx * isz + 120]
                    if raw[0] == 0 and raw[1] == 0:
                        continue  # mode 0: not an inode in use
                    yield Inode(base + idx, raw)

    # --- where an inode's bytes are ------------------------------------------

    def mapping(self, inode, warnings=None):
        """(extents, meta): extents as (logical, physical, count) runs of
        the inode's data (unwritten extents included), meta as the physical
        blocks of its extent tree or indirect blocks and xattr block."""
        meta = []
        if inode.file_acl:
            meta.append(inode.file_acl)
        if inode.flags & INLINE_DATA_FL:
            return [], meta
        if inode.flags & EXTENTS_FL:
            return self._extent_runs(inode, meta, warnings), meta
        kind = inode.kind
        if kind == S_IFLNK and inode.size < 60:
            return [], meta  # fast symlink: the target is in i_block
        if kind not in (S_IFREG, S_IFDIR, S_IFLNK):
            return [], meta  # devices, fifos, sockets: no blocks
        return self._indirect_runs(inode, meta), meta

    def _extent_runs(self, inode, meta, warnings):
        runs = []
        stack = [(inode.i_block, "inode")]
        limit = self.blocks_count
        while stack:
            node, where = stack.pop()
            magic, entries, _max, depth = struct.unpack_from("<HHHH", node, 0)
            if magic != EXTENT_MAGIC:
                if warnings is not None:
                    warnings.append(f"inode {inode.ino}: bad extent header "
                                    f"in {where}")
                continue
            entries = min(entries, (len(node) - 12) // 12)
            for k in range(entries):
                off = 12 + 12 * k
                if depth == 0:
                    lblk, length, hi, lo = struct.unpack_from("<IHHI", node,
                                                              off)
                    if length > 32768:
                        length -= 32768  # unwritten (fallocated) extent
                    pblk = hi << 32 | lo
                    if pblk + length <= limit:
                        runs.append((lblk, pblk, length))
                else:
                    _lblk, lo, hi = struct.unpack_from("<IIH", node, off)
                    child = hi << 32 | lo
                    if child >= limit:
                        continue
                    meta.append(child)
                    stack.append((self.read_blocks(child, 1),
                                  f"block {child}"))
        runs.sort()
        return runs

    def _indirect_runs(self, inode, meta):
        ptrs = struct.unpack_from("<15I", inode.i_block)
        per = self.block_size // 4
        limit = self.blocks_count
        pairs = []   # (logical, physical)

        def walk(block, level, lbase):
            if not block or block >= limit:
                return
            meta.append(block)
            children = struct.unpack_from(f"<{per}I",
                                          self.read_blocks(block, 1))
            span = per ** (level - 1)
            for k, child in enumerate(children):
                if not child:
                    continue
                if level == 1:
                    if child < limit:
                        pairs.append((lbase + k, child))
                else:
                    walk(child, level - 1, lbase + k * span)

        for k in range(12):
            if ptrs[k] and ptrs[k] < limit:
                pairs.append((k, ptrs[k]))
        walk(ptrs[12], 1, 12)
        walk(ptrs[13], 2, 12 + per)
        walk(ptrs[14], 3, 12 + per + per * per)
        runs = []
        for lblk, pblk in sorted(pairs):
            if runs and runs[-1][0] + runs[-1][2] == lblk and \
                    runs[-1][1] + runs[-1][2] == pblk:
                runs[-1][2] += 1
            else:
                runs.append([lblk, pblk, 1])
        return [tuple(r) for r in runs]

    # --- directories ---------------------------------------------------------

    def dir_entries(self, inode, extents):
        """(child inode, name bytes) of a directory, without . and .."""
        filetype = bool(self.incompat & INCOMPAT_FILETYPE)
        if inode.flags & INLINE_DATA_FL:
            # 4 bytes of parent inode, then entries in the rest of i_block
            # (entries that overflow into the system.data xattr are not read)
            yield from _parse_dirents(inode.i_block[4:], filetype)
            return
        bs = self.block_size
        for _lblk, pblk, count in extents:
            data = self.read_blocks(pblk, count)
            for k in range(count):
                yield from _parse_dirents(data[k * bs:(k + 1) * bs], filetype)

    # --- block bitmaps -------------------------------------------------------

    def block_in_use(self, block):
        """True/False from the block bitmap; None when the group's bitmap
        was never initialised (BLOCK_UNINIT: only its metadata is used)."""
        group, index = divmod(block - self.first_data_block,
                              self.blocks_per_group)
        if group < 0 or group >= self.group_count:
            return True
        bitmap = self._bitmaps.get(group)
        if bitmap is None:
            g = self.groups[group]
            if self.csum_groups and g.flags & BG_BLOCK_UNINIT:
                bitmap = b""
            else:
                bitmap = self.read_blocks(g.block_bitmap, 1)
            self._bitmaps[group] = bitmap
        if not bitmap:
            return None
        return bool(bitmap[index >> 3] >> (index & 7) & 1)

    # --- static metadata -----------------------------------------------------

    def static_metadata(self):
        """(kind, first block, count) of the structures at fixed places:
        superblocks and group descriptors (with reserved GDT blocks),
        bitmaps, inode tables, the MMP block."""
        out = []
        sgd = "superblocks and group descriptors"
        if self.first_data_block:
            out.append((sgd, 0, self.first_data_block))  # 1 KiB blocks: boot
        meta_bg = bool(self.incompat & INCOMPAT_META_BG)
        old_gdt = min(self.first_meta_bg, self.gdt_block_count()) if meta_bg \
            else self.gdt_block_count()
        for g in range(self.group_count):
            if self.has_super(g):
                first = self.group_first_block(g)
                if g == 0 and not self.first_data_block:
                    first = 0
                out.append((sgd, first,
                            1 + old_gdt + self.reserved_gdt_blocks))
        if meta_bg:
            dpb = self.descs_per_block
            for m in range(self.first_meta_bg, self.gdt_block_count()):
                for g in (m * dpb, m * dpb + 1, m * dpb + dpb - 1):
                    if g < self.group_count:
                        out.append((sgd, self.group_first_block(g) +
                                    (1 if self.has_super(g) else 0), 1))
        for g in self.groups:
            out.append(("bitmaps", g.block_bitmap, 1))
            out.append(("bitmaps", g.inode_bitmap, 1))
            out.append(("inode tables", g.inode_table,
                        self.inode_blocks_per_group))
        if self.incompat & INCOMPAT_MMP and self.mmp_block:
            out.append(("superblocks and group descriptors",
                        self.mmp_block, 1))
        return out


def _parse_dirents(data, filetype):
    pos, n = 0, len(data)
    while pos + 8 <= n:
        ino, rec_len, name_len, _ftype = struct.unpack_from("<IHBB", data, pos)
        if not filetype:
            name_len |= _ftype << 8
        if rec_len == 0 or rec_len == 65535:
            rec_len = n - pos   # 64 KiB blocks encode their full length so
        if rec_len < 8 or pos + rec_len > n:
            break
        if ino and name_len and 8 + name_len <= rec_len:
            name = bytes(data[pos + 8:pos + 8 + name_len])
            if name not in (b".", b".."):
                yield ino, name
        pos += rec_len
