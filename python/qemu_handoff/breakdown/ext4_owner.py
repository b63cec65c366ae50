# SPDX-License-Identifier: GPL-2.0-or-later
"""Which inode, metadata structure or free space each modified byte of one
ext2/3/4 filesystem belongs to.

One pass over the inode tables maps every inode in use to its blocks (data
extents, extent tree or indirect blocks, xattr block); each run is looked
up in the modified ranges by bisection, so the cost grows with the number
of extents, not with the size of the disk. Blocks no inode owns are the
fixed metadata (superblocks, group descriptors, bitmaps, inode tables),
else free in the block bitmap (what deleted files left), else allocated
with no owner found. Paths are resolved only for the inodes that own
modified bytes, from one pass over the directories.
"""

from collections import defaultdict

from . import ext4
from .intervals import RangeSet, subtract

RESIZE_INO = 7

OWNER_JOURNAL = ("journal",)


def _meta(kind):
    return ("meta", kind)


class FsBreakdown:
    """The data bytes of one filesystem, by owner."""

    def __init__(self):
        self.by_inode = defaultdict(int)      # ino -> bytes (files, dirs)
        self.journal = 0
        self.metadata = defaultdict(int)      # kind -> bytes
        self.free = 0
        self.paths = {}                       # ino -> [name, ...] or None
        self.dirs = set()                     # inos that are directories
        self.unnamed = 0                      # bytes of inodes with no path
        self.unnamed_inodes = []
        self.inodes_scanned = 0

    def total(self):
        return (sum(self.by_inode.values()) + self.journal +
                sum(self.metadata.values()) + self.free)


def attribute(fs, modified, progress=None, warnings=None):
    """@modified: normalised byte ranges relative to the filesystem's start
    (inside it). Returns an FsBreakdown."""
    out = FsBreakdown()
    warnings = [] if warnings is None else warnings
    mods = RangeSet(modified)
    if not mods:
        return out
    bs = fs.block_size
    claims = []

    def claim(pblk, count, owner):
        a = pblk * bs
        for s, e in mods.overlaps(a, a + count * bs):
            claims.append((s, e, owner))

    # Fixed metadata first: on an overlap (a corrupt filesystem) it wins.
    for kind, first, count in fs.static_metadata():
        claim(first, count, _meta(kind))

    directories = []
    report = None
    if progress:
        def report(done, total):
            progress(f"inode tables: group {done}/{total}")
    for inode in fs.used_inodes(report):
        out.inodes_scanned += 1
        ino = inode.ino
        if ino == fs.journal_inum:
            owner = OWNER_JOURNAL
        elif ino == RESIZE_INO:
            # Maps the reserved GDT blocks (claimed above already) with
            # indirect blocks of its own.
            owner = _meta("superblocks and group descriptors")
        elif ino < fs.first_ino and ino != ext4.ROOT_INO:
            owner = _meta("reserved inodes (quota, bad blocks, ...)")
        elif ino in fs.special_inodes:
            owner = _meta(fs.special_inodes[ino])
        elif inode.flags & ext4.EA_INODE_FL:
            owner = _meta("extended attribute value inodes")
        else:
            owner = ("inode", ino)
        runs, meta = fs.mapping(inode, warnings)
        if inode.is_dir():
            directories.append((inode, runs))
            out.dirs.add(ino)
        for _lblk, pblk, count in runs:
            if mods.touches(pblk * bs, (pblk + count) * bs):
                claim(pblk, count, owner)
        for pblk in meta:
            claim(pblk, 1, owner)

    # Each byte once: the first claim wins.
    claims.sort(key=lambda c: (c[0], c[1]))
    covered = []
    cursor = 0
    for s, e, owner in claims:
        s = max(s, cursor)
        if s >= e:
            continue
        cursor = e
        covered.append((s, e))
        if owner is OWNER_JOURNAL or owner == OWNER_JOURNAL:
            out.journal += e - s
        elif owner[0] == "meta":
            out.metadata[owner[1]] += e - s
        else:
            out.by_inode[owner[1]] += e - s

    # The rest: free (deleted files) or allocated with no owner.
    for s, e in subtract(mods.ranges, _merge(covered)):
        block = s // bs
        while block * bs < e:
            lo, hi = max(s, block * bs), min(e, (block + 1) * bs)
            if fs.block_in_use(block):
                out.metadata["allocated, no owner found"] += hi - lo
            else:
                out.free += hi - lo
            block += 1

    if out.by_inode:
        _resolve_paths(fs, directories, out, progress)
    return out


def _merge(ranges):
    merged = []
    for s, e in ranges:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def _resolve_paths(fs, directories, out, progress):
    if progress:
        progress(f"directories: reading {len(directories)} to name "
                 f"{len(out.by_inode)} inodes")
    wanted = set(out.by_inode)
    dir_inos = out.dirs
    parent = {}      # dir ino -> (parent dir ino, name)
    name_of = {}     # wanted non-dir ino -> (dir ino, name)
    for inode, runs in directories:
        for child, name in fs.dir_entries(inode, runs):
            if child in dir_inos:
                parent.setdefault(child, (inode.ino, name))
            elif child in wanted:
                name_of.setdefault(child, (inode.ino, name))
    for ino in wanted:
        out.paths[ino] = _path(ino, parent, name_of)
        if out.paths[ino] is None:
            out.unnamed += out.by_inode[ino]
            out.unnamed_inodes.append(ino)


def _path(ino, parent, name_of):
    parts = []
    cur = ino
    if cur in name_of:
        cur, name = name_of[cur][0], name_of[cur][1]
        parts.append(name)
    elif cur not in parent and cur != ext4.ROOT_INO:
        return None
    seen = set()
    while cur != ext4.ROOT_INO:
        if cur in seen or cur not in parent:
            return None
        seen.add(cur)
        cur, name = parent[cur]
        parts.append(name)
    return [p.decode("utf-8", "backslashreplace") for p in reversed(parts)]
