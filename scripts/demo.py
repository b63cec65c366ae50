#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Demo: move a running test guest from one QEMU of the fork to another.

Boots the test guest with a workload, live-migrates it over loopback TCP to a
second process holding the same base disk, checks that the guest goes on
where it stopped, and prints what happened. Until migrate-handoff lands this
uses stock QEMU migration (RAM precopy + incremental block migration over the
shared base), which is also the baseline handoff is measured against.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from vm import GuestVM, create_overlay, free_tcp_port  # noqa: E402


def say(msg):
    print(f"demo: {msg}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="mixed",
                    help="guest workload preset (default: mixed)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (overlays, logs, consoles)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="qemu-handoff-demo-")
    vms = []
    try:
        src_disk = create_overlay(os.path.join(work, "src.qcow2"))
        dst_disk = create_overlay(os.path.join(work, "dst.qcow2"))
        say(f"booting the test guest (TCG) with workload '{args.workload}'")
        t0 = time.monotonic()
        src = GuestVM("src", work, src_disk, workload=args.workload).start()
        vms.append(src)
        src.wait_serial(r"handoff-guest: ready", timeout=120)
        say(f"guest up in {time.monotonic() - t0:.1f} s; running the workload")
        src.wait_serial(rf"handoff-guest: workload {args.workload} done",
                        timeout=300)
        src.wait_serial(r"^heartbeat 2\r?$", timeout=30)

        port = free_tcp_port()
        dst = GuestVM("dst", work, dst_disk,
                     incoming=f"tcp:127.0.0.1:{port}").start()
        vms.append(dst)
        say(f"migrating to a second QEMU over tcp:127.0.0.1:{port} "
            "(stock precopy + incremental block migration)")
        src.qmp.cmd("migrate", uri=f"tcp:127.0.0.1:{port}", inc=True)
        while True:
            info = src.qmp.cmd("query-migrate")
            status = info.get("status")
            ram = info.get("ram", {})
            disk = info.get("disk", {})
            sent = ram.get("transferred", 0) + disk.get("transferred", 0)
            print(f"\rdemo: {status:<10} {sent / 1e6:8.1f} MB sent", end="",
                  flush=True)
            if status in ("completed", "failed", "cancelled"):
                print()
                break
            time.sleep(0.25)
        if status != "completed":
            say(f"migration {status}: {info.get('error-desc', '')}")
            return 1

        beat = max(src.heartbeats())
        dst.qmp.cmd("cont")
        dst.wait_serial(r"^heartbeat \d+\r?$", timeout=30)
        resumed = dst.heartbeats()[0]

        ram = info.get("ram", {})
        disk = info.get("disk", {})
        print()
        print(f"  {'total time':<28}{info['total-time']:>10} ms")
        print(f"  {'downtime':<28}{info.get('downtime', 0):>10} ms")
        print(f"  {'RAM bytes on the wire':<28}{ram.get('transferred', 0):>10}")
        print(f"  {'disk bytes on the wire':<28}{disk.get('transferred', 0):>10}")
        print(f"  {'guest heartbeat':<28}{beat:>5} -> {resumed} "
              "(source -> destination)")
        print()
        if resumed not in (beat + 1, beat + 2):
            say("the guest did not resume where it stopped")
            return 1
        say("the guest runs on the destination, state carried over")
        return 0
    finally:
        for vm in vms:
            vm.stop()
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            import shutil
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
