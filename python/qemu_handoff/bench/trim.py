# SPDX-License-Identifier: GPL-2.0-or-later
"""What discarded blocks cost a handoff, with and without the TRIM path:
the test guest writes random data, deletes it and some of the base's own
files, then hands off to a destination on 127.0.0.1 with a fixed mode (so
that bytes compare). Three cells: the drive with discard=ignore (the
guest's fstrim never reaches the image), discard=unmap with fstrim (the
freed blocks become zero clusters and cross as zero runs), and the modified
state without any deletion (what the kept data alone costs). Prints stream
bytes, disk bytes sent as zero runs and seconds; every move is verified
(RAM, disk, execution). The deleted data's pages stay in guest RAM as free
memory and are sent in every cell: skipping those is the guest agent's
part.

  scripts/bench-trim.py [--deleted-mib 64] [--mode zstd-3] [--direct]
"""

import argparse
import os
import shutil
import tempfile
import time

from ..bases import (create_base, start_destination, start_from_base,
                     wait_heartbeat_after)
from ..identity import assert_same_vm

KEPT_MIB = 8


def prepare(vm, deleted_mib, delete, trim, direct):
    vm.shell(f"mkdir -p /mnt/bench && dd if=/dev/urandom of=/mnt/bench/kept "
             f"bs=1M count={KEPT_MIB} 2>/dev/null && sync")
    if not delete:
        return
    # O_DIRECT with --direct: the data never enters the page cache, so
    # that guest RAM does not hold a copy that dedup would find anyway.
    flag = " oflag=direct" if direct else ""
    vm.shell(f"dd if=/dev/urandom of=/mnt/bench/deleted bs=1M "
             f"count={deleted_mib}{flag} 2>/dev/null && sync", timeout=600)
    vm.shell("rm -r /mnt/bench/deleted /mnt/modules/fs && sync")
    if trim:
        vm.shell("fstrim /mnt && sync")


def one_move(work, base, mode, deleted_mib, discard, delete, direct):
    os.makedirs(work)
    src = start_from_base("src", work, base, discard=discard)
    dst = start_destination("dst", work, base)
    try:
        wait_heartbeat_after(src, 1)
        prepare(src, deleted_mib, delete, discard == "unmap", direct)
        t0 = time.monotonic()
        src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}",
                    compression=mode)
        info = src.wait_migration()
        seconds = time.monotonic() - t0
        assert info["status"] == "completed", info.get("error-desc")
        assert_same_vm(src, dst)
        return seconds, info["handoff"]
    finally:
        src.stop()
        dst.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deleted-mib", type=int, default=64)
    ap.add_argument("--mode", default="zstd-3")
    ap.add_argument("--direct", action="store_true",
                    help="write the deleted data with O_DIRECT (no copy in "
                         "the guest's page cache)")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="qemu-handoff-trim-")
    cells = [("kept data only", "unmap", False),
             ("deleted, discard=ignore", "ignore", True),
             ("deleted, discard=unmap + fstrim", "unmap", True)]
    try:
        base = create_base(work, os.path.join(work, "base"))
        print(f"  {KEPT_MIB} MiB kept, {args.deleted_mib} MiB random data "
              f"{'(O_DIRECT) ' if args.direct else ''}and /mnt/modules/fs "
              f"(base files) deleted, mode {args.mode}")
        print(f"  {'cell':<34}{'stream MB':>10}{'zero-run MiB':>14}"
              f"{'seconds':>9}")
        for n, (name, discard, delete) in enumerate(cells):
            s, st = one_move(os.path.join(work, f"m{n}"), base, args.mode,
                             args.deleted_mib, discard, delete, args.direct)
            print(f"  {name:<34}{st['output-bytes'] / 1e6:>10.1f}"
                  f"{st['zero-run'] * 4096 / 2**20:>14.1f}{s:>9.2f}",
                  flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
