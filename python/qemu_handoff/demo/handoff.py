# SPDX-License-Identifier: GPL-2.0-or-later
"""Handoff versus stock QEMU migration of the same VM over an emulated WAN.

For each method, in one run: a user VM resumed from the test guest's base
runs a workload and moves over a tbf-shaped link with added RTT (qemu_handoff.
wan) to a destination holding the same base. Prints a table (total time,
downtime, bytes on the wire, CPU seconds) and writes the figures as JSON.
Every move is verified (RAM, disk, execution) unless --no-verify.

  scripts/demo-handoff.py                       # handoff vs stock, 10 Mbit/s
  scripts/demo-handoff.py --rate 25 --methods handoff stock stock-xbzrle
"""

import argparse
import json
import os
import shutil
import tempfile

from ..paths import TOP
from ..scenario import METHODS, progress_line, run_move
from ..workloads import TestWorkload


def table(results):
    lines = [f"  {'method':<15}{'total s':>9}{'downtime ms':>13}"
             f"{'guest ms':>10}{'wire MB':>10}{'src CPU s':>11}"
             f"{'dst CPU s':>11}  verified"]
    for r in results:
        if r["status"] != "completed":
            lines.append(f"  {r['method']:<15} {r['status']}: {r['error']}")
            continue
        lines.append(f"  {r['method']:<15}{r['total_time_ms'] / 1000:>9.1f}"
                     f"{r['downtime_ms']:>13}{r['guest_downtime_ms']:>10}"
                     f"{r['wire_bytes'] / 1e6:>10.2f}"
                     f"{r['src_cpu_s']:>11.1f}{r['dst_cpu_s']:>11.1f}  "
                     f"{'yes' if r.get('verified') else 'no'}")
    lines.append("  downtime: QEMU's figure (source stop to last byte written); "
                 "guest: source stop to destination loaded")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10, help="Mbit/s (10)")
    ap.add_argument("--rtt", type=float, default=50, help="ms (50)")
    ap.add_argument("--workload", default="mixed")
    ap.add_argument("--methods", nargs="+", default=["handoff", "stock"],
                    choices=sorted(METHODS))
    ap.add_argument("--out", default=os.path.join(TOP, "build", "bench",
                                                  "handoff-vs-stock.json"))
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="qemu-handoff-bench-")
    results = []
    try:
        print(f"bench: saving a base from the test guest in {work}")
        workload = TestWorkload(work, args.workload).prepare()
        print(f"bench: workload '{args.workload}', link {args.rate:g} Mbit/s, "
              f"{args.rtt:g} ms RTT")
        for method in args.methods:
            r = run_move(method, os.path.join(work, method), workload,
                         [(0, args.rate)], args.rtt,
                         progress=progress_line(f"{method:<15}"),
                         verify=not args.no_verify)
            print()
            results.append(r)
        print()
        print(table(results))
        ok = [r for r in results if r["status"] == "completed"]
        hand = [r for r in ok if r["method"].startswith("handoff")]
        stock = [r for r in ok if r["method"].startswith("stock")]
        if hand and stock:
            fastest = min(stock, key=lambda r: r["total_time_ms"])
            best_hand = min(r["total_time_ms"] for r in hand)
            which = ("the stock configuration run" if len(stock) == 1 else
                     f"the fastest of the {len(stock)} stock configurations "
                     "run")
            print(f"\n  handoff is "
                  f"{fastest['total_time_ms'] / best_hand:.1f}x faster than "
                  f"{which} ({fastest['method']}), with "
                  f"{fastest['wire_bytes'] / min(r['wire_bytes'] for r in hand):.1f}x "
                  f"fewer bytes on the wire")
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"rate_mbit": args.rate, "rtt_ms": args.rtt,
                       "workload": args.workload, "results": results}, f,
                      indent=2)
        print(f"\n  figures: {args.out}")
        return 0 if len(ok) == len(results) else 1
    finally:
        if args.keep:
            print(f"bench: work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
