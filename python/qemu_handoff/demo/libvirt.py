# SPDX-License-Identifier: GPL-2.0-or-later
"""`virsh migrate --handoff` between two libvirt hosts over an emulated WAN.

Two libvirtd of the fork run as two hosts on this machine (qemu_handoff.
libvirt_hosts), the destination behind a tbf-shaped link with added RTT
(qemu_handoff.wan). A base is saved from a libvirt domain booting the test
guest; a user domain resumed from it runs a workload and moves with
`virsh migrate --handoff` (and, with --compare, once more with libvirt's
stock way for local disks, --copy-storage-inc). Each move is checked: the
guest goes on at the destination where it stopped, with the source's disk.

  scripts/demo-libvirt.py                  # handoff, 10 Mbit/s, 50 ms
  scripts/demo-libvirt.py --compare        # and --copy-storage-inc (minutes)
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

from ..libvirt_hosts import LibvirtHost, built, create_base, move_over_wan
from ..wan import WanLink


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10, help="Mbit/s (10)")
    ap.add_argument("--rtt", type=float, default=50, help="ms (50)")
    ap.add_argument("--workload", default="mixed")
    ap.add_argument("--compare", action="store_true",
                    help="also move with --copy-storage-inc")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args(argv)
    if not built():
        sys.exit("demo-libvirt: the libvirt fork is not built: run "
                 "scripts/build-libvirt.sh")

    def log(line):
        print(f"demo-libvirt: {line}", flush=True)

    work = tempfile.mkdtemp(prefix="qemu-handoff-libvirt-")
    results = []
    try:
        log("saving a base from a libvirt domain booting the test guest")
        base = create_base(os.path.join(work, "base-work"),
                           os.path.join(work, "base"))
        with WanLink(args.rate, rtt_ms=args.rtt) as link:
            src = LibvirtHost(os.path.join(work, "host-a"), "host-a")
            dst = LibvirtHost(os.path.join(work, "host-b"), "host-b",
                              netns=link.netns)
            try:
                src.start()
                dst.start()
                log(f"host A: {src.uri}")
                log(f"host B: {dst.uri} (in namespace {link.netns}, behind "
                    f"{args.rate:g} Mbit/s, {args.rtt:g} ms RTT)")
                methods = ["handoff"] + (["copy-storage-inc"]
                                         if args.compare else [])
                for method in methods:
                    log(f"{method}: domain resumed from the base on A, "
                        f"workload {args.workload}, moving to B")
                    t0 = time.monotonic()
                    try:
                        f = move_over_wan(work, base, link, src, dst, method,
                                          workload=args.workload, log=log)
                        results.append((method, f["seconds"],
                                        f["qemu_seconds"], f["bytes"], "yes"))
                    except AssertionError as e:
                        results.append((method, time.monotonic() - t0, 0, 0,
                                        f"NO: {e}"))
            finally:
                dst.stop()
                src.stop()
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n  {'virsh migrate':<20}{'virsh s':>9}{'job s':>8}"
          f"{'to B, MB':>10}  running on B with A's disk")
    for method, seconds, job, sent, ok in results:
        print(f"  --{method:<18}{seconds:>9.1f}{job:>8.1f}{sent / 1e6:>10.1f}"
              f"  {ok}")
    print("  virsh s: the command's wall time; job s: the migration job's "
          "time elapsed (virsh domjobinfo --completed)")
    return 0 if all(r[4] == "yes" for r in results) else 1
