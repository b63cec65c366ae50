# SPDX-License-Identifier: GPL-2.0-or-later
"""bench-synthesis --early-start: the same syntheses with early start
(docs/synthesis.md, "Early start"; issue 22).

Each application's overlay (bench/synthesis.py's) is made an early-start
overlay the way an owner would: its first request's working set recorded
(synthesis/record.py), then the overlay loaded paused and saved again
with that order first (handoff-overlay-save early-start-order). Per link,
the early-start overlay is synthesized by the same service, and the
client sends the application its request as soon as the service says
the VM runs, while the segments still arrive:

  first response   = client starts sending -> the application's answer
  running          = client starts sending -> the service says it runs
  complete         = client starts sending -> every segment in, applied
  overhead         = first response - the request's own time on the
                     warm, local VM: in the report, the same request on
                     the VM synthesized without early start in the same
                     run (the cell's overhead_s: against the prepared
                     VM's reply "ms", which varies by seconds from run
                     to run under TCG)

with QEMU's counts: segments asked for (the service forwarded each
WANT: a demand fetch, one round trip at least), faults, disk demands.
"""

import os
import threading
import time

from ..formats import overlay as overlay_file
from ..synthesis.client import ask, synthesize
from ..synthesis.launcher import LaunchedVM
from ..synthesis.record import record_working_set


def log(msg):
    print(f"bench-synthesis: {msg}", flush=True)


def make_early_start_overlay(app, overlay, work, forward, request):
    """@overlay (@app's) recorded answering @request on guest port
    @forward, then saved again with the order; returns its facts."""
    # Absolute: QEMU, not this process, opens them.
    order = os.path.abspath(os.path.join(work, f"{app.name}.order"))
    os.makedirs(os.path.join(work, "record"), exist_ok=True)
    t0 = time.monotonic()
    rec = record_working_set(overlay, app.base_dir, order,
                             os.path.join(work, "record"), forward=forward,
                             request=request)
    record_s = time.monotonic() - t0
    path = os.path.abspath(os.path.join(work, f"{app.name}-early.overlay"))
    _, description = overlay_file.read_info(overlay)
    os.makedirs(os.path.join(work, "resave"), exist_ok=True)
    vm = LaunchedVM("resave", os.path.join(work, "resave"), description,
                    app.base_dir, overlay=os.path.abspath(overlay))
    try:
        vm.start()
        vm.wait_loaded()
        t1 = time.monotonic()
        vm.qmp.cmd("handoff-overlay-save", path=path,
                   early_start_order=order)
        deadline = t1 + 3600
        while (status := vm.qmp.cmd("query-migrate").get("status")) \
                not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app.name}: re-save still {status}")
            time.sleep(1)
        if status != "completed":
            raise RuntimeError(f"{app.name}: re-save {status}: "
                               f"{vm.failure()}")
        resave_s = time.monotonic() - t1
    finally:
        vm.stop(remove_files=True)
    return {"path": path, "overlay_bytes": os.path.getsize(path),
            "order_pages": rec.pages, "order_disk_chunks": rec.disk_chunks,
            "record_s": round(record_s, 1), "resave_s": round(resave_s, 1)}


class FirstRequest:
    """The application's request, sent from its own thread as soon as
    the service says the VM runs (synthesize's on_running)."""

    def __init__(self, address, port_of, request, t0):
        self.address, self.port_of, self.request = address, port_of, request
        self.t0 = t0
        self.answer = self.error = None
        self.sent_at = self.answered_at = None
        self._thread = None

    def __call__(self, note):
        port = note["ports"][self.port_of]
        self._thread = threading.Thread(target=self._ask, args=(port,),
                                        daemon=True)
        self._thread.start()

    def _ask(self, port):
        self.sent_at = time.monotonic()
        try:
            self.answer = ask(self.address, port, self.request)
        except Exception as e:          # noqa: B902 - reported in the cell
            self.error = e
        self.answered_at = time.monotonic()

    def wait(self, timeout=600):
        if self._thread is None:
            raise RuntimeError("the service never said the VM runs")
        self._thread.join(timeout)
        if self.error or self.answer is None:
            raise RuntimeError(f"first request: {self.error or 'no answer'}")
        return self.answer


def synthesize_early(addr, ns_addr, overlay, app, port, request, tls):
    """One early-start synthesis of @overlay through the service at
    @addr, its request sent to @ns_addr as soon as the VM runs: figures
    (the caller checks the answer)."""
    t0 = time.monotonic()
    first = FirstRequest(ns_addr, str(port), request, t0)
    result = synthesize(addr, overlay, forward=[port], name=app.name,
                        progress=None, on_running=first, **tls)
    answer = first.wait()
    t = result["timings"]
    es = result["early-start"]
    warm_s = app.reply.get("ms", 0) / 1000
    first_s = first.answered_at - t0
    return answer, {
        "early_start": True,
        "first_response_s": round(first_s, 2),
        "overhead_s": round(first_s - warm_s, 2),
        "running_s": result["client-running-seconds"],
        "complete_s": result["client-seconds"],
        "first_request_s": round(first.answered_at - first.sent_at, 2),
        "service": t, "segments": es["segments"],
        "asked": es["feed-wanted"], "faults": es["faults"],
        "disk_demands": es["disk-demands"],
        "fault_wait_s": es["fault-wait-ms"] / 1000,
        "fault_wait_max_ms": es["fault-wait-max-ms"],
        "segments_demanded": es["demanded"],
        "eager_segments": es.get("eager-segments"),
        "in_when_running": es.get("in-when-running")}


def report_early(results):
    """The early-start rows of summary.md, beside the same link's
    synthesis without early start."""
    cells = results["cells"]
    rows = ["", "Early start (issue 22): the request sent when the service "
            "says the VM runs; overhead = first response - the same "
            "request's time on the VM synthesized without early start in "
            "the same run (whole, local: the warm VM); outside = first "
            "response - the application's own time for the request (its "
            "reply's ms), which TCG's variance from run to run does not "
            "blur; blocked = faults' waits for segments not in yet until "
            "every segment is in (QEMU's fault-wait-ms, and the longest).",
            "",
            "| app | link | first response | overhead | outside | "
            "VM running | "
            "every segment in | segments in when it runs (sent while "
            "QEMU launched) | segments asked for / all | faults | "
            "blocked | without early start (same run): first response, "
            "synthesis |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if not c.get("early_start"):
            continue
        plain = [p for p in cells if not p.get("early_start") and
                 p["app"] == c["app"] and p["rate_mbit"] == c["rate_mbit"]
                 and p.get("run") == c.get("run")]
        before = (f"{plain[0]['first_response_s']:.1f} s, "
                  f"{plain[0]['synthesis_s']:.1f} s" if plain else "-")
        overhead = (f"{c['first_response_s'] - plain[0]['first_request_s']:.1f}"
                    f" s" if plain else "-")
        outside = (f"{c['first_response_s'] - c['answer']['ms'] / 1000:.1f}"
                   f" s" if "ms" in c.get("answer", {}) else "-")
        blocked = (f"{c['fault_wait_s']:.1f} s, "
                   f"{c['fault_wait_max_ms']} ms" if "fault_wait_s" in c
                   else "-")
        rows.append(f"| {c['app']} | {c['rate_mbit']} Mbit/s, "
                    f"{c['rtt_ms']} ms | **{c['first_response_s']:.1f} s** "
                    f"| {overhead} | {outside} | {c['running_s']:.1f} s | "
                    f"{c['complete_s']:.1f} s | "
                    f"{c.get('in_when_running', '-')} "
                    f"({c.get('eager_segments', '-')}) | {c['asked']} / "
                    f"{c['segments']} | {c['faults']} | {blocked} | "
                    f"{before} |")
    rows += ["", "| app | early-start overlay | order: pages, disk chunks | "
             "record | re-save (lzma-6) |", "|---|---|---|---|---|"]
    for name, o in results.get("early_overlays", {}).items():
        rows.append(f"| {name} | {o['overlay_bytes'] / 1e6:.1f} MB | "
                    f"{o['order_pages']}, {o['order_disk_chunks']} | "
                    f"{o['record_s']:.0f} s | {o['resave_s']:.0f} s |")
    return rows

