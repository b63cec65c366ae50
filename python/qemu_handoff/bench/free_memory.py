# SPDX-License-Identifier: GPL-2.0-or-later
"""What free guest memory costs a move, side by side in one run: the test
guest fills 100 MiB with random data and frees it (stale bytes in free
pages), then moves over the emulated WAN (tc tbf + delay relay, RTT 50 ms)
by each system:

  handoff               no free-memory information
  handoff + agent       -device handoff-agent, the guest agent's reports
  handoff + balloon     virtio-balloon free-page-hint=on, no agent
  stock multifd zstd    stock precopy, incremental block migration
  stock + balloon       the same with free-page-hint=on (stock honours it)

Prints seconds, bytes on the wire, and the share of the guest's MemFree
at the start that was not sent (handoff: its free-memory statistic).
Every move is verified (RAM outside the pages sent as free, disk,
execution).

  scripts/bench-free-memory.py [--rates 10,25] [--freed-mib 100] [--json F]
"""

import argparse
import json
import os
import shutil
import tempfile

from ..bases import (AGENT_DEVICES, BALLOON_DEVICES, FREE_RUN_TRACE,
                     create_base, free_ranges, mem_free, start_from_base,
                     wait_heartbeat_after)
from ..scenario import run_move
from ..guest import test_guest

# (label, method, devices)
CELLS = [
    ("handoff", "handoff", ()),
    ("handoff + agent", "handoff", AGENT_DEVICES),
    ("handoff + balloon", "handoff", BALLOON_DEVICES),
    ("stock multifd zstd", "stock-multifd-zstd", ()),
    ("stock + balloon", "stock-multifd-zstd", BALLOON_DEVICES),
]


class FreedMemory:
    """The test guest, resumed from a base with @devices, after it filled
    and freed @freed_mib of random data."""

    def __init__(self, work, devices, freed_mib):
        self.name = "freed-memory"
        self.guest = test_guest()
        self.device_args = tuple(devices)
        self.freed_mib = freed_mib
        key = "-".join(d.split(",")[0] for d in devices[1::2]) or "plain"
        base_work = os.path.join(work, f"base-{key}")
        self.base_dir = os.path.join(base_work, "base")
        if not os.path.exists(self.base_dir):
            create_base(base_work, self.base_dir, extra_args=self.device_args)
        self.mem_free = None
        self.stock = False

    def start_source(self, workdir, extra_args=()):
        vm = start_from_base("src", workdir, self.base_dir,
                             extra_args=[*self.device_args, *extra_args,
                                         *FREE_RUN_TRACE])
        wait_heartbeat_after(vm, 1)
        vm.shell(f"handoff-workload mem --mib {self.freed_mib} --pattern "
                 f"random --seed 9 >/dev/null", timeout=300)
        self.mem_free = mem_free(vm)
        return vm

    def free_ranges(self, src):
        """What the identity check lets read as zeros at the destination:
        for a handoff, the ranges its trace says went last as free; for stock
        with the balloon, any page (ram.c does not say which it skipped)."""
        if self.stock and "virtio-balloon" in " ".join(self.device_args):
            return [(0, self.guest.mem_mib << 20)]
        return free_ranges(src)

    def check_service(self, dst):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="10,25",
                    help="link rates in Mbit/s, comma-separated")
    ap.add_argument("--freed-mib", type=int, default=100)
    ap.add_argument("--json", help="write every result to this file")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="qemu-handoff-free-")
    results = []
    try:
        print(f"  test guest, {args.freed_mib} MiB of random data freed "
              f"before the move; RTT 50 ms")
        print(f"  {'Mbit/s':>6}  {'system':<20}{'seconds':>9}{'wire MB':>9}"
              f"{'MemFree MiB':>12}{'not sent':>9}")
        for rate in [int(r) for r in args.rates.split(",")]:
            for n, (label, method, devices) in enumerate(CELLS):
                wl = FreedMemory(work, devices, args.freed_mib)
                wl.stock = method.startswith("stock")
                r = run_move(method, os.path.join(work, f"{rate}-{n}"), wl,
                             [(0, rate)])
                h = r.get("handoff") or {}
                unsent = h.get("free-memory")
                r.update(label=label, mem_free=wl.mem_free)
                results.append(r)
                share = (f"{unsent / wl.mem_free:>9.1%}" if unsent is not None
                         else f"{'-':>9}")
                print(f"  {rate:>6}  {label:<20}{r['wall_s']:>9.1f}"
                      f"{r['wire_bytes'] / 1e6:>9.1f}"
                      f"{wl.mem_free / 2**20:>12.0f}{share}", flush=True)
                shutil.rmtree(os.path.join(work, f"{rate}-{n}"),
                              ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
