# SPDX-License-Identifier: GPL-2.0-or-later
"""vm-breakdown: what a VM's modified state is made of.

See `scripts/vm-breakdown.py --help`; the code is in
qemu_handoff.breakdown.
"""

import argparse
import signal
import sys
import time

from . import BreakdownError, memory, report
from .analysis import Options, analyse
from .disk_map import find_qemu_img

DESCRIPTION = """\
NAME
  vm-breakdown - what a VM's modified disk and memory state is made of

DESCRIPTION
  A VM started from a base differs from it by what it has done since: on
  disk, by the clusters its qcow2 overlay holds. vm-breakdown says what
  those clusters are, in terms of the guest's filesystem.

  The overlay's top layer is read with `qemu-img map`: its data clusters
  (bytes the guest wrote) and its zero clusters (what a guest TRIM/discard
  leaves with discard=unmap, or zeroes written with detect-zeroes). Every
  byte of the data clusters is then attributed to one of:

    a directory       the file or directory owning the block, counted in
                      its directory cut to --depth path components
                      (usr/lib/x86_64-linux-gnu, var/cache/apt); a
                      directory's own blocks count in that directory
    files without     inodes in use that own blocks but have no name
      a name          (deleted while still open, or unreachable)
    ext4 journal      the journal inode (inode 8)
    metadata          superblocks and group descriptors, bitmaps, inode
                      tables, and allocated blocks with no owner found
    free blocks       blocks the block bitmap marks free: what deleted
      (deleted files) files left behind (the guest did not trim them)
    outside the       partition table and boot area, other partitions,
      filesystem      space beyond the filesystem

  Attribution is per byte of the overlay, so it adds up to what the
  overlay holds: a 4 KiB guest write allocates a whole cluster (64 KiB by
  default), and the neighbouring blocks copied into it from the base count
  where they belong (often a neighbouring file, or free space).

  The disk may hold an MBR (with logical partitions) or a GPT partition
  table with ext2/3/4 partitions, or an ext2/3/4 filesystem on the whole
  disk. Nothing is mounted or written and no root is needed: the
  filesystem's metadata is read directly from the overlay and its backing
  files at the offsets qemu-img map gives, so only metadata is read, not
  the whole disk. Images whose clusters map gives no offset for
  (compressed, encrypted, a network backing) are first copied to a sparse
  raw file (qemu-img convert, in --tmpdir), as --copy forces.

  Memory (--qmp SOCKET --base DIR, the VM running with the qemu-handoff
  guest agent, -device handoff-agent): the guest's RAM is read through
  its QEMU (pmemsave) and each 4 KiB page that differs from the base's
  memory image is counted by what the guest kernel keeps in it, as the
  agent reports (QMP handoff-agent-page-classes): free (what a handoff
  with the agent does not send), page cache, anonymous (process memory),
  kernel (slab, page tables) or other. The VM keeps running: memory is a
  snapshot of something that moves.

  A disk of a VM that was running is a filesystem that was mounted: its
  journal may hold metadata not yet at its home location. The journal's
  committed transactions are replayed in memory, as the next mount would,
  before the filesystem is read (--no-journal reads it as stored).
"""

EPILOG = """\
OUTPUT
  By default a table: sizes in MiB with one decimal and their percentage
  of all modified bytes (data + zero clusters), directories largest first
  (--top of them, the rest summed on one line), then the other categories.
  Progress goes to stderr (-q silences it).

  --json prints one JSON document:
    image        path, format, virtual_size, cluster_size, backing
    disk         modified_bytes = data_bytes + zero_bytes;
                 categories: files, unnamed_files, journal, metadata,
                   free_blocks_deleted_files, outside_filesystems,
                   unanalysed_filesystems (they sum to data_bytes);
                 metadata (by kind), outside (by region),
                 directories (all, largest first: path, filesystem, bytes),
                 files (the --top largest: path, inode, bytes),
                 filesystems (type, label, block size, journal replay),
                 partition_table, partitions, read_method, depth
    memory       null without --qmp; else source, ram_bytes,
                 modified_bytes, classes (bytes of modified pages: free,
                 page_cache, anonymous, kernel, other, unmapped), guest
                 (the same classes over all RAM), and free_bytes,
                 page_cache_bytes, anonymous_bytes (of modified pages)
    timings      seconds per step
    warnings     list of strings
  Paths have no leading slash in directories ("/" is the root); with more
  than one filesystem, "filesystem" names the partition (p1, p2, ...).

EXIT STATUS
  0 the breakdown was printed; 1 it could not be made (the message says
  why: not a qcow2 image, no backing file, no ext2/3/4 filesystem, image
  in use, unreadable file); 2 bad usage.

EXAMPLES
  scripts/vm-breakdown.py /srv/vms/alice.qcow2
  scripts/vm-breakdown.py /srv/vms/alice.qcow2 --depth 2 --top 10
  scripts/vm-breakdown.py /srv/vms/alice.qcow2 --json | jq .disk.categories
  scripts/vm-breakdown.py -U /srv/vms/alice.qcow2   # VM still running
  scripts/vm-breakdown.py -U /srv/vms/alice.qcow2 --qmp /run/alice.qmp \\
      --base /var/lib/handoff/bases/debian12      # and its memory

LIMITS
  A file with several hard links counts under the first name found.
  bigalloc filesystems are not analysed (counted as "not analysed"); LVM,
  LUKS and other filesystems count as "outside the filesystem". A running
  VM's overlay lacks what the guest has not written back yet.
"""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="vm-breakdown.py",
        usage="%(prog)s OVERLAY.qcow2 [--depth N] [--top N] [--json] "
              "[options]",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overlay", metavar="OVERLAY.qcow2",
                   help="the VM's qcow2 overlay; its backing file is the "
                        "base disk")
    p.add_argument("--depth", type=int, default=3, metavar="N",
                   help="path components directories are cut to "
                        "(default 3)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="directories in the table and files in the JSON "
                        "(default 20; 0 = all)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON document instead of the table")
    p.add_argument("-U", "--force-share", action="store_true",
                   help="read an image a running QEMU holds (the result is "
                        "a snapshot of something that moves)")
    p.add_argument("--copy", action="store_true",
                   help="read a raw copy of the disk (qemu-img convert) "
                        "instead of the layers' files")
    p.add_argument("--tmpdir", metavar="DIR",
                   help="where --copy's raw file goes (default $TMPDIR)")
    p.add_argument("--no-journal", action="store_true",
                   help="do not replay the journal's committed "
                        "transactions")
    p.add_argument("--qmp", metavar="SOCKET",
                   help="the running VM's QMP socket (a UNIX socket): also "
                        "break its memory down, with the guest agent")
    p.add_argument("--base", metavar="DIR",
                   help="with --qmp: the VM's base directory")
    p.add_argument("--qemu-img", metavar="PATH",
                   help="qemu-img to use (default: the fork's build/qemu/"
                        "qemu-img, else qemu-img on PATH)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress messages on stderr")
    args = p.parse_args(argv)
    if args.depth < 1:
        p.error("--depth must be at least 1")
    if args.top < 0:
        p.error("--top must be 0 or more")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    # SIGTERM unwinds like an error, so that a raw copy is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def progress(msg):
        if not args.quiet:
            print(f"vm-breakdown: [{time.monotonic() - start:5.1f}s] {msg}",
                  file=sys.stderr, flush=True)

    try:
        opts = Options(depth=args.depth, top=args.top,
                       qemu_img=find_qemu_img(args.qemu_img),
                       force_share=args.force_share, copy=args.copy,
                       tmpdir=args.tmpdir,
                       replay_journal=not args.no_journal,
                       qmp=args.qmp, base=args.base)
        result = analyse(args.overlay, opts, progress)
        doc = report.document(result, memory.collect(opts, progress))
    except BreakdownError as e:
        print(f"vm-breakdown: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vm-breakdown: interrupted", file=sys.stderr)
        return 130
    progress(f"done in {doc['timings']['total']:.2f} s")
    if args.json:
        sys.stdout.write(report.to_json(doc))
    else:
        sys.stdout.write(report.to_table(doc, args.top or 10**9))
    return 0
