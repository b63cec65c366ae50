# SPDX-License-Identifier: GPL-2.0-or-later
"""One move of a user VM over an emulated WAN link, by handoff or by stock
QEMU migration, measured: the unit the demo and the benchmarks are made of.

Every run starts the same way: a user VM resumed from the base runs a
workload; a destination holding the same base waits in the link's network
namespace; the source moves the VM through the link's delay relay. The
bytes on the wire are counted by the relay, so every method is measured
the same way.
"""

import os
import time

from handoff_env import run_workload, start_destination, start_from_base
from identity import assert_same_vm
from wan import WanLink

# How each method is started on the source. Stock methods copy the disk
# with incremental block migration over the shared base (`migrate -i`).
METHODS = {
    "handoff": {"command": "migrate-handoff", "args": {}},
    "handoff-zstd-3": {"command": "migrate-handoff",
                       "args": {"compression": "zstd-3"}},
    "handoff-lzma-1": {"command": "migrate-handoff",
                       "args": {"compression": "lzma-1"}},
    "stock": {"command": "migrate", "args": {"inc": True}},
    "stock-xbzrle": {"command": "migrate", "args": {"inc": True},
                     "caps": ["xbzrle"]},
}


def _event_time(vm, name, **data):
    """Host time (s) of the first QMP event `name` whose data matches."""
    vm.qmp.cmd("query-status")      # collects events that arrived meanwhile
    for ev in vm.qmp.events:
        if ev["event"] == name and all(ev.get("data", {}).get(k) == v
                                       for k, v in data.items()):
            t = ev["timestamp"]
            return t["seconds"] + t["microseconds"] / 1e6
    return None


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_move(method, workdir, base_dir, rate_mbit, rtt_ms=50,
             workload="mixed", progress=None, verify=True):
    """Moves one freshly started user VM; returns the measured figures."""
    spec = METHODS[method]
    os.makedirs(workdir, exist_ok=True)
    vms = []
    with WanLink(rate_mbit=rate_mbit, rtt_ms=rtt_ms) as link:
        try:
            src = start_from_base("src", workdir, base_dir)
            vms.append(src)
            run_workload(src, workload)
            dst = start_destination("dst", workdir, base_dir,
                                    wrap=link.ns_command([]), gdb=verify,
                                    handoff=spec["command"] != "migrate")
            vms.append(dst)
            for cap in spec.get("caps", []):
                src.qmp.cmd("migrate-set-capabilities", capabilities=[
                    {"capability": cap, "state": True}])
                dst.qmp.cmd("migrate-set-capabilities", capabilities=[
                    {"capability": cap, "state": True}])
            # The destination reports when it has loaded everything; with
            # the source's STOP that gives the downtime a guest really sees
            # (QEMU's own figure ends when the source has written its last
            # byte, which may still sit in socket buffers for seconds).
            dst.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "events", "state": True}])
            addr, port = link.relay_to(dst.port)
            cpu0 = (_cpu_seconds(src.proc.pid), _cpu_seconds(dst.proc.pid))
            t0 = time.monotonic()
            src.qmp.cmd(spec["command"], uri=f"tcp:{addr}:{port}",
                        **spec["args"])
            while True:
                info = src.qmp.cmd("query-migrate")
                if progress:
                    progress(method, time.monotonic() - t0, info,
                             link.relays[0].bytes_forwarded[0])
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            if info["status"] == "completed":
                dst.wait_incoming()
            elapsed = time.monotonic() - t0
            stopped = _event_time(src, "STOP")
            loaded = _event_time(dst, "MIGRATION", status="completed")
            result = {
                "method": method,
                "rate_mbit": rate_mbit,
                "rtt_ms": rtt_ms,
                "workload": workload,
                "status": info["status"],
                "error": info.get("error-desc"),
                "wall_s": round(elapsed, 2),
                "total_time_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"),
                "guest_downtime_ms": (round((loaded - stopped) * 1000)
                                      if stopped and loaded else None),
                "wire_bytes": link.relays[0].bytes_forwarded[0],
                "src_cpu_s": round(_cpu_seconds(src.proc.pid) - cpu0[0], 2),
                "dst_cpu_s": round(_cpu_seconds(dst.proc.pid) - cpu0[1], 2),
                "ram_bytes": info.get("ram", {}).get("transferred"),
                "disk_bytes": info.get("disk", {}).get("transferred"),
                "handoff": info.get("handoff"),
            }
            if verify and info["status"] == "completed":
                assert_same_vm(src, dst)
                result["verified"] = True
            return result
        finally:
            for vm in vms:
                vm.stop()
