# SPDX-License-Identifier: GPL-2.0-or-later
"""What the guest agent costs the guest: its CPU time while a handoff asks
it for free memory, over the time the guest ran. The test guest (256 MiB,
-device handoff-agent) fills and frees 100 MiB of random data, optionally
keeps dirtying 32 MiB at a rate during the move (more rounds, so more
reports; a rate near the link's never converges), and is handed off
over the emulated WAN (tbf at the rate, delay relay, RTT 50 ms), verified.
The agent's CPU time (/proc/PID/schedstat, nanoseconds on a CPU) and the
guest's uptime are read in the guest just before the move (on the source)
and after it (on the destination, where the same process goes on); each
report's own time comes from the agent's log.

  scripts/bench-agent-cpu.py [--rate 10] [--dirty-mib-per-s R] [--idle-s 30]
                             [--json F]
"""

import argparse
import json
import os
import re
import shutil
import tempfile
import time

from ..bases import (AGENT_DEVICES, FREE_RUN_TRACE, create_base, free_ranges,
                     start_from_base, wait_heartbeat_after)
from ..scenario import run_move
from ..guest import test_guest

FREED_MIB = 100
# The agent's log line per report (guest-agent/src/main.cc).
REPORT = re.compile(r"generation \d+: (\d+) extents, (\d+) MiB free, "
                    r"(\d+) ms")


def agent_times(vm):
    """(agent CPU seconds, guest uptime seconds), read together."""
    out = vm.shell("cat /proc/$(pidof handoff-agent)/schedstat /proc/uptime")
    sched, uptime = out.strip().splitlines()[-2:]
    return int(sched.split()[0]) / 1e9, float(uptime.split()[0])


class AgentGuest:
    """The test guest with the agent's port, memory freed, optionally
    dirtying memory through the move; guest_facts() is what the agent
    spent (scenario.run_move calls it after a verified move)."""

    def __init__(self, work, dirty_rate, idle_s):
        self.name = "agent-cpu"
        self.guest = test_guest()
        self.device_args = AGENT_DEVICES
        self.dirty_rate, self.idle_s = dirty_rate, idle_s
        self.base_dir = os.path.join(work, "base")
        create_base(work, self.base_dir, extra_args=AGENT_DEVICES)
        self.before = self.idle = None

    def start_source(self, workdir, extra_args=()):
        vm = start_from_base("src", workdir, self.base_dir,
                             extra_args=[*AGENT_DEVICES, *FREE_RUN_TRACE,
                                         *extra_args])
        wait_heartbeat_after(vm, 1)
        vm.shell(f"handoff-workload mem --mib {FREED_MIB} --pattern random "
                 f"--seed 9 >/dev/null", timeout=300)
        if self.dirty_rate:
            vm.shell(f"handoff-workload dirty --mib 32 --rate-mib-per-s "
                     f"{self.dirty_rate:g} >/dev/null 2>&1 &")
        # Between handoffs the agent sleeps in read(): this should be 0.
        idle0 = agent_times(vm)
        time.sleep(self.idle_s)
        self.before = agent_times(vm)
        self.idle = (self.before[0] - idle0[0], self.before[1] - idle0[1])
        return vm

    def free_ranges(self, src):
        return free_ranges(src)

    def check_service(self, dst):
        return None

    def guest_facts(self, dst):
        after = agent_times(dst)
        log = dst.shell("cat /tmp/handoff-agent.log")
        reports = [tuple(int(x) for x in m) for m in REPORT.findall(log)]
        cpu, guest_s = after[0] - self.before[0], after[1] - self.before[1]
        return {"agent_cpu_s": round(cpu, 4), "guest_s": round(guest_s, 2),
                "agent_cpu_share": round(cpu / guest_s, 5),
                "idle_agent_cpu_s": round(self.idle[0], 4),
                "idle_guest_s": round(self.idle[1], 2),
                "reports": reports}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10, help="Mbit/s (10)")
    ap.add_argument("--dirty-mib-per-s", type=float, default=0,
                    help="keep dirtying 32 MiB at this rate during the move")
    ap.add_argument("--idle-s", type=float, default=30,
                    help="agent CPU measured this long before the move")
    ap.add_argument("--json", help="write the result to this file")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="qemu-handoff-agent-cpu-")
    try:
        wl = AgentGuest(work, args.dirty_mib_per_s, args.idle_s)
        r = run_move("handoff", os.path.join(work, "move"), wl,
                     [(0, args.rate)])
        if r["status"] != "completed":
            print(f"move {r['status']}: {r['error']}")
            return 1
        g, h = r["guest"], r["handoff"]
        ms = [rep[2] for rep in g["reports"]]
        dirty = (f", dirtying {args.dirty_mib_per_s:g} MiB/s"
                 if args.dirty_mib_per_s else "")
        print(f"handoff at {args.rate:g} Mbit/s{dirty}: "
              f"{r['total_time_ms'] / 1000:.1f} s, {h['agent-reports']} "
              f"agent reports, {h['free-memory'] / 2**20:.0f} MiB sent as free")
        print(f"agent CPU {g['agent_cpu_s'] * 1000:.1f} ms over "
              f"{g['guest_s']:.1f} s of guest time: "
              f"{g['agent_cpu_share']:.3%}; idle before the move: "
              f"{g['idle_agent_cpu_s'] * 1000:.1f} ms over "
              f"{g['idle_guest_s']:.1f} s")
        print(f"agent log: {len(ms)} reports, {sum(ms)} ms in all "
              f"(per report {min(ms, default=0)}-{max(ms, default=0)} ms, "
              f"up to {max((rep[0] for rep in g['reports']), default=0)} "
              f"extents)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(r, f, indent=1)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
