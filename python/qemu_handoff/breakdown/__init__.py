# SPDX-License-Identifier: GPL-2.0-or-later
"""What a VM's modified state is made of (scripts/vm-breakdown.py).

One concept per module:

  disk_map.py    the overlay's layers as qemu-img sees them: which byte
                 ranges the top layer holds (data or zero clusters), and
                 where every range of the virtual disk is stored
  disk_reader.py reads the virtual disk (the overlay over its base)
                 directly from the layers' files, or from a raw copy
  intervals.py   sorted, disjoint [start, end) byte ranges
  partitions.py  MBR / GPT / bare filesystem: where the filesystems are
  ext4.py        a read-only ext2/3/4 reader (superblock, groups, inodes,
                 extents, directories)
  jbd2.py        the ext4 journal's committed transactions, replayed in
                 memory (the image is never written)
  ext4_owner.py  which inode, metadata structure or free space each
                 modified byte of one filesystem belongs to
  analysis.py    the whole disk: layers, partitions, filesystems
  report.py      the JSON document and the human table
  memory/        memory sources (none yet: the guest agent will be one)
"""


class BreakdownError(Exception):
    """An error the user can act on; the CLI prints it without a trace."""
