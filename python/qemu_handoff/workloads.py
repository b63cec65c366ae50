# SPDX-License-Identifier: GPL-2.0-or-later
"""What runs in the VM that moves: the benchmarks' workloads.

A workload owns its base and knows how to put a source VM into the state
that gets moved:

- TestWorkload: the CI-size test guest (tests/guest) resumed from its base,
  after the `mixed` workload (or another of the guest's workloads).
- EdgeApp: the Debian edge guest (tests/edge-guest) with one application
  installed into the VM's own overlay from a local apt repository, its
  service started and sent one request. Installing takes minutes under TCG,
  so the prepared VM is saved once (its overlay and a stock migration
  stream of its state, to a file) and every move restores a copy of it,
  then sends the service one more request so that its working set is warm.

After a move, check_service() asks the destination's service again: the
application must still answer, with the same answer.

An EdgeApp's semantic variant (semantic=True, for the benchmark systems
`*-semantic`) is the same application on a base and VMs with the semantic
layer's devices (SEMANTIC_DEVICES), whose guest runs `clean` (`apt-get
clean; sync; fstrim -av`) before each move; guest_facts() then tells what
the guest had to offer: bytes trimmed, MemFree at the start of the move,
and the guest agent's CPU time across it.
"""

import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import threading
import time

from .bases import (AGENT_DEVICES, BALLOON_DEVICES, FREE_RUN_TRACE,
                    add_boot_files, create_base, free_ranges, mem_free,
                    run_workload, start_from_base)
from .guest import EDGE, GuestVM, edge_guest, test_guest


def _serve_directory(path):
    """An HTTP server on 127.0.0.1 for `path`; returns (server, port)."""
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# The semantic layer's devices: the guest agent's port, which a handoff
# asks for free memory, and virtio-balloon's free page hinting, which stock
# precopy honours (a handoff takes its hints too). Both on one base, so
# that every system moves the same prepared VM; bases record their device
# layout, so the base, the VMs made from it and destinations all have them.
SEMANTIC_DEVICES = (*AGENT_DEVICES, *BALLOON_DEVICES)


def _base(cache_dir, guest, key, devices=()):
    """The guest's base, saved once under cache_dir and reused while `key`
    (what the guest was built from) is unchanged; with @devices."""
    base_dir = os.path.join(cache_dir, "base")
    stamp = os.path.join(cache_dir, "base.key")
    if os.path.exists(stamp) and open(stamp).read() == key and \
            os.path.exists(os.path.join(base_dir, "base.json")):
        add_boot_files(base_dir, guest)     # bases saved before boot/ was
        return base_dir
    shutil.rmtree(cache_dir, ignore_errors=True)
    os.makedirs(cache_dir)
    create_base(cache_dir, base_dir, guest=guest, extra_args=devices)
    with open(stamp, "w") as f:
        f.write(key)
    return base_dir


def _file_key(*paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


class TestWorkload:
    """The test guest after one of its workloads (tests/guest/README.md)."""

    def __init__(self, cache_dir, name="mixed"):
        self.name = "test" if name == "mixed" else f"test-{name}"
        self.guest_workload = name
        self.guest = test_guest()
        self.cache_dir = os.path.join(cache_dir, "test")
        self.base_dir = None

    def prepare(self, log=print):
        self.base_dir = _base(self.cache_dir, self.guest,
                              _file_key(os.path.join(os.path.dirname(
                                  self.guest.kernel), ".key")))
        return self

    def start_source(self, workdir, extra_args=()):
        src = start_from_base("src", workdir, self.base_dir, guest=self.guest,
                              extra_args=extra_args)
        try:
            run_workload(src, self.guest_workload)
            src.wait_serial(r"^heartbeat \d+\r?$")
        except Exception:
            src.stop()
            raise
        return src

    def check_service(self, dst):
        """The test guest's content checks are the RAM and disk identity."""
        return None


class EdgeApp:
    """An application of the edge guest: `face`, `ocr` or `physics`."""

    def __init__(self, cache_dir, app, semantic=False):
        self.name = app
        self.app = app
        self.semantic = semantic
        self.device_args = SEMANTIC_DEVICES if semantic else ()
        self.guest = edge_guest()
        self.edge_dir = os.path.join(
            cache_dir, "edge-semantic" if semantic else "edge")
        self.dir = os.path.join(self.edge_dir, app)
        self.base_dir = None
        self.reply = None
        self.facts = {}

    @property
    def _state(self):
        return os.path.join(self.dir, "state.mig")

    @property
    def _disk(self):
        return os.path.join(self.dir, "disk.qcow2")

    def prepare(self, log=print):
        """Base (once for all apps) and the prepared VM (once per app)."""
        key = _file_key(os.path.join(EDGE, ".key"))
        self.base_dir = _base(self.edge_dir, self.guest, key,
                              self.device_args)
        stamp = os.path.join(self.dir, "prepared.json")
        if os.path.exists(stamp):
            with open(stamp) as f:
                self.reply = json.load(f)["reply"]
            return self
        log(f"preparing the {self.app} VM: installing handoff-{self.app} "
            f"in its overlay (minutes under TCG)")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        server, port = _serve_directory(os.path.join(EDGE, "repo"))
        vm = start_from_base("prepare", self.dir, self.base_dir,
                             guest=self.guest, host_access=True,
                             extra_args=self.device_args)
        try:
            vm.wait_serial(r"^heartbeat \d+\r?$", timeout=60)
            vm.console_command(f"repo http://10.0.2.2:{port}")
            vm.wait_serial(r"handoff-guest: repo ", timeout=30)
            started = time.monotonic()
            vm.console_command(f"run {self.app}")
            m = vm.wait_serial(rf"handoff-guest: workload {self.app} "
                               r"(done|failed)", timeout=3600)
            if m.group(1) != "done":
                raise RuntimeError(f"installing {self.app} failed:\n"
                                   f"{vm.serial()[-3000:]}")
            self.reply = self._reply(vm)
            # Saved paused: the state file and the overlay agree.
            vm.qmp.cmd("stop")
            vm.qmp.cmd("migrate", uri=f"exec:cat > {self._state}")
            info = vm.wait_migration()
            if info["status"] != "completed":
                raise RuntimeError(f"saving the {self.app} VM: {info}")
        finally:
            vm.stop()
            server.shutdown()
        os.rename(os.path.join(self.dir, "prepare.qcow2"), self._disk)
        with open(stamp, "w") as f:
            json.dump({"app": self.app, "reply": self.reply,
                       "install_s": round(time.monotonic() - started, 1)}, f)
        return self

    def _reply(self, vm, after=0):
        """The service's last answer on the console (past offset `after`)."""
        m = None
        for m in re.finditer(rf"handoff-guest: reply {self.app} (.*?)\r?$",
                             vm.serial()[after:], re.M):
            pass
        if not m:
            raise RuntimeError(f"{vm.name}: no reply from {self.app}")
        return json.loads(m.group(1))

    def request(self, vm, timeout=600):
        """Sends the service one request from inside the guest; returns the
        answer."""
        after = len(vm.serial())
        vm.console_command(f"request {self.app}")
        deadline = time.monotonic() + timeout
        while f"reply {self.app} " not in vm.serial()[after:]:
            if "handoff-guest: no reply" in vm.serial()[after:] or \
                    time.monotonic() > deadline:
                raise RuntimeError(f"{vm.name}: {self.app} did not answer")
            time.sleep(0.1)
        time.sleep(0.2)     # the rest of the line
        return self._reply(vm, after)

    def start_source(self, workdir, extra_args=(), clean=True):
        """A copy of the prepared VM, running, its service warm; the
        semantic variant's guest has cleaned up (clean() unless @clean is
        False)."""
        disk = os.path.join(workdir, "src.qcow2")
        shutil.copyfile(self._disk, disk)
        # Written back now, not when the VM's disk is flushed at switch-over
        # (inside the measured downtime).
        os.sync()
        trace = FREE_RUN_TRACE if self.semantic else ()
        src = GuestVM("src", workdir, disk, guest=self.guest,
                      incoming=f"exec:cat {self._state}",
                      extra_args=[*self.device_args, *trace,
                                  *extra_args]).start()
        try:
            if src.wait_incoming()["status"] != "completed":
                raise RuntimeError("restoring the prepared VM failed")
            src.qmp.cmd("cont")
            self.check_service(src)
            if self.semantic and clean:
                self.clean(src)
        except Exception:
            src.stop()
            raise
        return src

    def check_service(self, vm):
        """The service answers as it did when the VM was prepared (the
        physics simulation's state moves on: it must have stepped on)."""
        reply = self.request(vm)
        if self.app == "physics":
            assert reply["step"] > 0 and reply["particles"] > 0, reply
        else:
            want = {k: v for k, v in self.reply.items() if k != "ms"}
            got = {k: v for k, v in reply.items() if k != "ms"}
            assert got == want, f"{self.app}: {got} != {want}"
        return reply

    def clean(self, vm):
        """What the guest does before it moves: drops apt's package cache
        and trims the free blocks (the overlay turns them into zero
        clusters); then the facts the move starts from."""
        vm.console_command("clean")
        m = vm.wait_serial(r"^handoff-guest: cleaned (\d+)\r?$",
                           timeout=600)
        self.facts = {"trimmed_bytes": int(m.group(1)),
                      "mem_free_bytes": mem_free(vm),
                      "agent_before": _agent_times(vm)}

    def free_ranges(self, src):
        """What the identity check lets read as zeros at the destination:
        after a handoff, the ranges its trace says went last as free; after
        stock precopy with the balloon, any page (ram.c does not say which
        hinted pages it skipped)."""
        if not self.semantic:
            return ()
        if src.qmp.cmd("query-migrate").get("handoff") is None:
            return [(0, self.guest.mem_mib << 20)]
        return free_ranges(src)

    def guest_facts(self, dst):
        """After a verified move of the semantic variant: bytes trimmed,
        MemFree when the move started, and the guest agent's CPU seconds
        over the guest seconds from then until now (on @dst)."""
        if not self.semantic:
            return None
        before, after = self.facts["agent_before"], _agent_times(dst)
        cpu = after["cpu_s"] - before["cpu_s"]
        guest_s = after["uptime_s"] - before["uptime_s"]
        return {"trimmed_bytes": self.facts["trimmed_bytes"],
                "mem_free_bytes": self.facts["mem_free_bytes"],
                "agent_cpu_s": round(cpu, 4), "guest_s": round(guest_s, 2),
                "agent_cpu_share": round(cpu / guest_s, 5) if guest_s else None}


def _agent_times(vm):
    """The guest agent's CPU time (schedstat: nanoseconds on a CPU) and the
    guest's uptime, read together in the guest."""
    out = vm.shell("cat /proc/$(cat /run/handoff-agent.pid)/schedstat "
                   "/proc/uptime")
    sched, uptime = out.strip().splitlines()[-2:]
    return {"cpu_s": int(sched.split()[0]) / 1e9,
            "uptime_s": float(uptime.split()[0])}


def make_workload(name, cache_dir, semantic=False):
    """`test` (the test guest's mixed workload), `test-NAME` (another of
    its workloads) or an edge application (`face`, `ocr`, `physics`).
    @semantic: the edge application's semantic variant (EdgeApp)."""
    if name == "test" or name.startswith("test-"):
        if semantic:
            raise ValueError("the semantic layer's benchmark systems run "
                             "on the edge guest's applications only")
        return TestWorkload(cache_dir, name[len("test-"):] or "mixed")
    return EdgeApp(cache_dir, name, semantic)
