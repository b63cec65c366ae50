# SPDX-License-Identifier: GPL-2.0-or-later
"""The ext3/ext4 journal (jbd2): committed transactions, replayed in memory.

A VM's disk is a snapshot of a mounted filesystem: metadata the guest
committed may still be only in the journal, not yet at its home location.
Recovery (what the kernel does at the next mount, or e2fsck) copies the
journal's committed blocks home; here the same blocks are computed and laid
over the disk's blocks when the filesystem is read (Ext4.set_patch), the
image itself is never written.

The three passes of the kernel's fs/jbd2/recovery.c: scan from the log's
start while block headers carry the expected sequence numbers (a
transaction counts only once its commit block is found); gather revoke
records; replay each tagged block unless a revoke record of the same or a
later transaction names it. Journal checksums are not verified here (the
kernel's and e2fsck's replay verify them); a torn last transaction is
still dropped for lacking its commit block. Fast-commit records
(ext4 fast_commit) are not replayed: a warning says so.
"""

import bisect
import struct

JBD2_MAGIC = 0xC03B3998
DESCRIPTOR, COMMIT, SB_V1, SB_V2, REVOKE = 1, 2, 3, 4, 5

INCOMPAT_REVOKE = 0x1
INCOMPAT_64BIT = 0x2
INCOMPAT_CSUM_V2 = 0x8
INCOMPAT_CSUM_V3 = 0x10
INCOMPAT_FAST_COMMIT = 0x20

FLAG_ESCAPE = 0x1
FLAG_SAME_UUID = 0x2
FLAG_LAST_TAG = 0x8


class Replay:
    def __init__(self):
        self.state = "none"       # none | clean | replayed | unreadable
        self.transactions = 0
        self.blocks = {}          # fs block -> bytes
        self.first_sequence = None
        self.last_sequence = None
        self.journal_blocks = 0

    def to_json(self):
        return {"state": self.state, "transactions": self.transactions,
                "blocks": len(self.blocks),
                "first_sequence": self.first_sequence,
                "last_sequence": self.last_sequence}


def _mapper(runs):
    starts = [r[0] for r in runs]

    def pblk(lblk):
        i = bisect.bisect_right(starts, lblk) - 1
        if i >= 0:
            lo, p, n = runs[i]
            if lblk < lo + n:
                return p + (lblk - lo)
        return None
    return pblk


def replay(fs, warnings):
    """The blocks recovery would write, from @fs's internal journal."""
    result = Replay()
    if not fs.journal_inum:
        if fs.needs_recovery():
            warnings.append("the filesystem needs recovery from an external "
                            "journal, which is not read: recent metadata "
                            "may be missing")
        return result
    jinode = fs.inode(fs.journal_inum)
    runs, _meta = fs.mapping(jinode, warnings)
    if not runs:
        result.state = "unreadable"
        warnings.append("the journal inode maps no blocks")
        return result
    jmap = _mapper(runs)
    bs = fs.block_size

    def jread(pos):
        p = jmap(pos)
        return fs.read_raw_blocks(p, 1) if p is not None else None

    jsb = jread(0)
    magic, btype = struct.unpack_from(">II", jsb, 0)
    if magic != JBD2_MAGIC or btype not in (SB_V1, SB_V2):
        result.state = "unreadable"
        warnings.append("no journal superblock in the journal inode")
        return result
    (j_bs, maxlen, first, sequence, start) = struct.unpack_from(">IIIII",
                                                                jsb, 0xC)
    incompat = struct.unpack_from(">I", jsb, 0x28)[0] if btype == SB_V2 else 0
    result.journal_blocks = maxlen
    if j_bs != bs:
        result.state = "unreadable"
        warnings.append(f"journal block size {j_bs} differs from the "
                        f"filesystem's {bs}")
        return result
    if start == 0:
        result.state = "clean"
        return result

    last = maxlen
    if incompat & INCOMPAT_FAST_COMMIT:
        fc = struct.unpack_from(">I", jsb, 0x54)[0] or 256
        last = maxlen - fc
        warnings.append("the journal has a fast-commit area; fast-commit "
                        "records are not replayed")
    if incompat & INCOMPAT_CSUM_V3:
        tag_bytes = 16
    else:
        tag_bytes = 12 + (2 if incompat & INCOMPAT_CSUM_V2 else 0)
        if not incompat & INCOMPAT_64BIT:
            tag_bytes -= 4
    tail = 4 if incompat & (INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3) else 0
    wide = bool(incompat & INCOMPAT_64BIT)

    def wrap(pos):
        while pos >= last:
            pos -= last - first
        return pos

    # Pass 1 + 2: scan, collect committed transactions and revoke records.
    transactions = []          # (sequence, [(fs block, journal pos, esc)])
    revoked = {}               # fs block -> latest revoking sequence
    pos, seq, pending, steps = start, sequence, [], 0
    pending_revokes = []
    while steps < maxlen:
        blk = jread(pos)
        if blk is None:
            break
        magic, btype, bseq = struct.unpack_from(">III", blk, 0)
        if magic != JBD2_MAGIC or bseq != seq:
            break
        if btype == DESCRIPTOR:
            off, n = 12, 0
            while off + tag_bytes <= bs - tail:
                if incompat & INCOMPAT_CSUM_V3:
                    lo, flags, hi = struct.unpack_from(">III", blk, off)
                else:
                    lo, flags = struct.unpack_from(">I2xH", blk, off)
                    hi = struct.unpack_from(">I", blk, off + 8)[0] \
                        if wide else 0
                block = (hi << 32 | lo) if wide else lo
                n += 1
                pending.append((block, wrap(pos + n), flags & FLAG_ESCAPE))
                off += tag_bytes
                if not flags & FLAG_SAME_UUID:
                    off += 16
                if flags & FLAG_LAST_TAG:
                    break
            pos = wrap(pos + 1 + n)
            steps += 1 + n
        elif btype == COMMIT:
            transactions.append((seq, pending))
            for block in pending_revokes:
                revoked[block] = seq
            pending, pending_revokes = [], []
            seq += 1
            pos = wrap(pos + 1)
            steps += 1
        elif btype == REVOKE:
            count = struct.unpack_from(">I", blk, 12)[0]
            rsize = 8 if wide else 4
            off = 16
            while off + rsize <= min(count, bs):
                if wide:
                    pending_revokes.append(struct.unpack_from(">Q", blk,
                                                              off)[0])
                else:
                    pending_revokes.append(struct.unpack_from(">I", blk,
                                                              off)[0])
                off += rsize
            pos = wrap(pos + 1)
            steps += 1
        else:
            break

    # Pass 3: replay.
    for tseq, tags in transactions:
        for block, jpos, escaped in tags:
            if revoked.get(block, -1) >= tseq:
                continue
            if block >= fs.blocks_count:
                warnings.append(f"journal transaction {tseq} names block "
                                f"{block}, beyond the filesystem")
                continue
            data = jread(jpos)
            if data is None:
                continue
            if escaped:
                data = struct.pack(">I", JBD2_MAGIC) + data[4:]
            result.blocks[block] = data
    result.state = "replayed"
    result.transactions = len(transactions)
    result.first_sequence = sequence
    result.last_sequence = seq - 1 if transactions else None
    return result
