# SPDX-License-Identifier: GPL-2.0-or-later
"""One move of a VM over an emulated WAN link, by handoff or by stock QEMU
migration, measured: the unit the demo and the benchmarks are made of.

Every move starts the same way: the workload (qemu_handoff.workloads) puts
a source VM into the state to move; a destination holding the same base
waits in the link's network namespace; the source moves the VM through the
link's delay relay while the link follows its rate schedule. The bytes on
the wire are counted by the relay, so every system is measured the same
way. Progress is sampled twice a second into a timeline.
"""

import os
import threading
import time

from .bases import start_destination
from .identity import assert_same_vm
from .tls import CertificateAuthority, tls_object
from .wan import WanLink

# How each system is started. Stock systems copy the disk with incremental
# block migration over the shared base (`migrate -i`); `caps` and `params`
# are set on both sides. Every system may auto-converge (throttle a guest
# that dirties memory faster than the link carries it), as a user moving
# VMs over a WAN would allow.
METHODS = {
    "handoff": {"command": "migrate-handoff", "args": {}},
    "handoff-tls": {"command": "migrate-handoff", "args": {}, "tls": True},
    "handoff-zstd-3": {"command": "migrate-handoff",
                       "args": {"compression": "zstd-3"}},
    "handoff-zstd-9": {"command": "migrate-handoff",
                       "args": {"compression": "zstd-9"}},
    "handoff-lzma-1": {"command": "migrate-handoff",
                       "args": {"compression": "lzma-1"}},
    "handoff-zlib-1": {"command": "migrate-handoff",
                       "args": {"compression": "zlib-1"}},
    "stock": {"command": "migrate", "args": {"inc": True}},
    "stock-xbzrle": {"command": "migrate", "args": {"inc": True},
                     "caps": ["xbzrle"]},
    "stock-compress": {"command": "migrate", "args": {"inc": True},
                       "caps": ["compress"]},
    "stock-multifd-zstd": {"command": "migrate", "args": {"inc": True},
                           "caps": ["multifd"],
                           "params": {"multifd-compression": "zstd"}},
    # With the semantic layer: the workload's semantic variant (the guest
    # agent's port and virtio-balloon free page hinting on the VM, `apt-get
    # clean; fstrim -a` in the guest before the move; workloads.py). Stock
    # gets zero-blocks: the trimmed clusters are zero clusters, which block
    # migration otherwise sends as data, byte for byte.
    "handoff-semantic": {"command": "migrate-handoff", "args": {},
                         "semantic": True},
    "stock-semantic": {"command": "migrate", "args": {"inc": True},
                       "caps": ["zero-blocks"], "semantic": True},
    "stock-multifd-zstd-semantic": {
        "command": "migrate", "args": {"inc": True},
        "caps": ["multifd", "zero-blocks"],
        "params": {"multifd-compression": "zstd"}, "semantic": True},
}
COMMON_CAPS = ["auto-converge"]

# Rate schedules: [(seconds from the start of the move, Mbit/s), ...].
PROFILES = {
    "5": [(0, 5)],
    "10": [(0, 10)],
    "25": [(0, 25)],
    "dynamic": [(0, 5), (50, 35), (100, 5)],
}

# A move that has not ended after this long is cancelled and reported so.
MOVE_TIMEOUT_S = 45 * 60


def _event_time(vm, name, **data):
    """Host time (s) of the first QMP event `name` whose data matches."""
    vm.qmp.cmd("query-status")      # collects events that arrived meanwhile
    for ev in vm.qmp.events:
        if ev["event"] == name and all(ev.get("data", {}).get(k) == v
                                       for k, v in data.items()):
            t = ev["timestamp"]
            return t["seconds"] + t["microseconds"] / 1e6
    return None


def downtime_parts(stopped, loaded, arrivals):
    """Where the guest's downtime went (ms), from the source's STOP, the
    destination's MIGRATION "completed" and the relay's arrivals
    (wan.Arrivals): until the stream's last byte crossed the link (the last
    round, and what the socket buffers held at the STOP), then the
    destination (the relay's one-way delay, its decode and apply backlog,
    device state, start); and the bytes that crossed the link after the
    STOP. (Not the source's own "completed": in the runs measured it came
    about a round trip after the last byte crossed.) None if an event is
    missing."""
    last = arrivals.last
    if not (stopped and loaded and last):
        return None
    at_stop = arrivals.bytes_by(stopped)
    return {"sending_ms": round((last[0] - stopped) * 1000),
            "destination_ms": round((loaded - last[0]) * 1000),
            "bytes_after_stop": last[1] - at_stop}


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _configure(vm, spec):
    caps = COMMON_CAPS + spec.get("caps", [])
    vm.qmp.cmd("migrate-set-capabilities", capabilities=[
        {"capability": c, "state": True} for c in caps])
    if spec.get("params"):
        vm.qmp.cmd("migrate-set-parameters", **spec["params"])


class _Schedule(threading.Thread):
    """Changes the link's rate at the schedule's times."""

    def __init__(self, link, schedule, t0):
        super().__init__(daemon=True)
        self.link, self.schedule, self.t0 = link, schedule, t0
        self.stop = threading.Event()

    def run(self):
        for at, rate in self.schedule[1:]:
            if self.stop.wait(max(0, self.t0 + at - time.monotonic())):
                return
            self.link.set_rate(rate)


def _sample(t, info, wire):
    point = {"t": round(t, 2), "status": info.get("status"), "wire": wire}
    h = info.get("handoff")
    if h:
        for k in ("input-bytes", "output-bytes", "mode", "bandwidth",
                  "link-bandwidth", "predicted-throughput", "iteration",
                  "remaining"):
            point[k] = h.get(k)
    for part in ("ram", "disk"):
        if part in info:
            point[f"{part}-bytes"] = info[part].get("transferred")
    return point


def progress_line(label):
    """A run_move progress callback redrawing one terminal line."""
    def show(method, elapsed, info, wire):
        extra = ""
        h = info.get("handoff")
        if h:
            # What the link carried (the probe, "bandwidth", may not be).
            rate = h.get("link-bandwidth", h["bandwidth"])
            extra = (f" round {h['iteration']} {h['mode']:<13} link "
                     f"{rate * 8 / 1e6:5.1f} Mbit/s")
        print(f"\r  {label} {info.get('status', '?'):<9} {elapsed:6.1f} s "
              f"{wire / 1e6:8.2f} MB on the wire{extra}   ", end="",
              flush=True)
    return show


TLS_HOST = "dst.cloudlet.test"


def tls_arguments(workdir):
    """-object arguments for TLS with peer verification, from a fresh CA:
    (source's, destination's)."""
    ca = CertificateAuthority(workdir, "tls-ca")
    client = ca.credentials(workdir, "tls-src", "client", "src.cloudlet.test")
    server = ca.credentials(workdir, "tls-dst", "server", TLS_HOST)
    return tls_object(client, "client"), tls_object(server, "server")


def run_move(method, workdir, workload, schedule, rtt_ms=50, progress=None,
             verify=True):
    """Moves one VM prepared by `workload` with system `method` over a link
    following `schedule`; returns the measured figures."""
    spec = METHODS[method]
    if spec.get("semantic") and not getattr(workload, "semantic", False):
        raise ValueError(f"{method} needs the workload's semantic variant "
                         f"(workloads.make_workload(..., semantic=True))")
    os.makedirs(workdir, exist_ok=True)
    vms = []
    tls = tls_arguments(workdir) if spec.get("tls") else ((), ())
    with WanLink(rate_mbit=schedule[0][1], rtt_ms=rtt_ms) as link:
        try:
            src = workload.start_source(workdir, extra_args=tls[0])
            vms.append(src)
            dst = start_destination("dst", workdir, workload.base_dir,
                                    wrap=link.ns_command([]), gdb=verify,
                                    handoff=spec["command"] != "migrate",
                                    guest=workload.guest,
                                    extra_args=[*tls[1], *getattr(
                                        workload, "device_args", ())])
            vms.append(dst)
            for vm in (src, dst):
                _configure(vm, spec)
            if spec.get("tls"):
                dst.qmp.cmd("migrate-set-parameters", tls_creds="tls0")
                src.qmp.cmd("migrate-set-parameters", tls_creds="tls0",
                            tls_hostname=TLS_HOST)
            # The destination reports when it has loaded everything; with
            # the source's STOP that gives the downtime a guest really sees
            # (QEMU's own figure ends when the source has written its last
            # byte, which may still sit in socket buffers for seconds).
            dst.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "events", "state": True}])
            addr, port = link.relay_to(dst.port)
            relay = link.relays[0]
            cpu0 = (_cpu_seconds(src.proc.pid), _cpu_seconds(dst.proc.pid))
            t0 = time.monotonic()
            rates = _Schedule(link, schedule, t0)
            rates.start()
            args = dict(spec["args"])
            if spec["command"] == "migrate-handoff":
                args["base"] = workload.base_dir
            src.qmp.cmd(spec["command"], uri=f"tcp:{addr}:{port}", **args)
            timeline = []
            while True:
                info = src.qmp.cmd("query-migrate")
                elapsed = time.monotonic() - t0
                timeline.append(_sample(elapsed, info,
                                        relay.bytes_forwarded[0]))
                if progress:
                    progress(method, elapsed, info, relay.bytes_forwarded[0])
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                if elapsed > MOVE_TIMEOUT_S:
                    src.qmp.cmd("migrate_cancel")
                time.sleep(0.5)
            rates.stop.set()
            # 7.2 sets "completed" before it computes total-time and
            # downtime: a query in between reads 0 for both (seen once in
            # the matrix, stock at 25 Mbit/s). Ask again until they are in.
            for _ in range(20):
                if info["status"] != "completed" or info.get("total-time"):
                    break
                time.sleep(0.1)
                info = src.qmp.cmd("query-migrate")
            if info["status"] == "completed":
                dst.wait_incoming()
            elapsed = time.monotonic() - t0
            stopped = _event_time(src, "STOP")
            loaded = _event_time(dst, "MIGRATION", status="completed")
            result = {
                "method": method,
                "workload": workload.name,
                "schedule": schedule,
                "rate_mbit": schedule[0][1],
                "rtt_ms": rtt_ms,
                "status": info["status"],
                "error": info.get("error-desc") or (
                    f"did not finish in {MOVE_TIMEOUT_S} s"
                    if info["status"] == "cancelled" else None),
                "wall_s": round(elapsed, 2),
                "total_time_ms": info.get("total-time"),
                "downtime_ms": info.get("downtime"),
                "guest_downtime_ms": (round((loaded - stopped) * 1000)
                                      if stopped and loaded else None),
                "wire_bytes": relay.bytes_forwarded[0],
                "return_bytes": relay.bytes_forwarded[1],
                "src_cpu_s": round(_cpu_seconds(src.proc.pid) - cpu0[0], 2),
                "dst_cpu_s": round(_cpu_seconds(dst.proc.pid) - cpu0[1], 2),
                "ram_bytes": info.get("ram", {}).get("transferred"),
                "disk_bytes": info.get("disk", {}).get("transferred"),
                "handoff": info.get("handoff"),
                "timeline": timeline,
                "downtime_parts": downtime_parts(stopped, loaded,
                                                 relay.arrivals),
            }
            if verify and info["status"] == "completed":
                # Pages sent as free (or, stock, hinted) may read as zeros.
                free = getattr(workload, "free_ranges", lambda vm: ())(src)
                assert_same_vm(src, dst, free=free)
                reply = workload.check_service(dst)
                result["verified"] = True
                if reply is not None:
                    result["reply_after_move"] = reply
                if hasattr(workload, "guest_facts"):
                    result["guest"] = workload.guest_facts(dst)
            return result
        finally:
            for vm in vms:
                vm.stop()
