# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmark matrix: handoff versus stock QEMU migration on edge
workloads over emulated WAN links, every cell one real move, verified.

For each workload (qemu_handoff.workloads) the VM to move is prepared once
(base, application installed, service warm); then, for each link profile
and each system, one move is made and measured (qemu_handoff.scenario):
total time, downtime, bytes on the wire, CPU seconds on each side, the
handoff record breakdown and a timeline. Per workload, an overlay-size
breakdown encodes the VM's state offline with the engine (qemu-handoff
encode): compressed alone, then with dedup, with delta, and adaptive.

Results go to OUT/results.json after every cell (rerun with --resume to
continue an interrupted run), then OUT/summary.md and OUT/plots/*.png.

  scripts/bench.sh                 # everything (hours: stock at 5 Mbit/s is slow)
  scripts/bench.sh --quick         # CI-size guest, one bandwidth, minutes
  scripts/bench.py --workloads ocr --profiles 10 --systems handoff stock
  scripts/bench.py --workloads physics --profiles 25 \
      --systems handoff-semantic stock-semantic    # with the semantic layer
  scripts/bench.py --report-only   # redo summary and plots from results.json
  scripts/bench.py --report-only --docs docs/bench   # publish them
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time

from ..scenario import METHODS, PROFILES, progress_line, run_move
from ..guest import QEMU
from ..paths import BUILD
from ..workloads import make_workload

from ..formats import manifest
from . import report as bench_report

WORKLOADS = ["test", "ocr", "physics", "face"]
SYSTEMS = ["stock", "stock-xbzrle", "stock-compress", "stock-multifd-zstd",
           "handoff", "handoff-zstd-3", "handoff-lzma-1"]
QUICK = {"workloads": ["test"], "profiles": ["25"],
         "systems": ["handoff", "stock"]}
CLI = os.path.join(BUILD, "handoff", "migration-handoff", "qemu-handoff")

# The overlay-size breakdown: each step adds one technique.
BREAKDOWN = [
    ("compressed", ["--codec", "zstd", "--level", "3", "--no-dedup"]),
    ("+ dedup", ["--codec", "zstd", "--level", "3"]),
    ("+ delta (xor)", ["--codec", "zstd", "--level", "3", "--delta", "xor"]),
    ("+ delta (prefix)", ["--codec", "zstd", "--level", "3",
                          "--delta", "prefix"]),
    ("+ adaptive at 10 Mbit/s", ["--adaptive", "--rate-mbit", "10"]),
]


def machine():
    def first(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  check=True).stdout.splitlines()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu": cpu,
            "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "qemu": first([QEMU, "--version"]),
            "accel": "tcg"}


def snapshot_images(snap):
    """A VM saved as a base in @snap (handoff-base-create): its manifest
    and the `qemu-handoff encode` arguments naming its RAM and disk."""
    base = manifest.read(snap)
    images = []
    for m in base.memory:
        images += ["--mem", f"{m.name}={m.path}"]
    images += ["--disk", f"disk={base.disk.path}"]
    return base, images


def overlay_breakdown(workload, work, log):
    """Encodes the VM's state (as it would be moved) offline, one technique
    added per step; returns {step: output bytes, ...} and the modified
    state's size."""
    snap = os.path.join(work, "snapshot")
    src = workload.start_source(work)
    try:
        # A base of the VM itself: every RAM block and the disk as images.
        src.qmp.slow_cmd(1800, "handoff-base-create", dir=snap)
    finally:
        src.stop()
    _, images = snapshot_images(snap)
    out = {"steps": []}
    for step, flags in BREAKDOWN:
        log(f"  overlay breakdown: {step}")
        stream = os.path.join(work, "stream")
        r = subprocess.run([CLI, "encode", "--base",
                            os.path.join(workload.base_dir, "index"), *images,
                            "-o", stream, "--json", *flags],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"qemu-handoff encode {step}: {r.stderr}")
        stats = json.loads(r.stdout)
        os.unlink(stream)
        if step == "compressed":
            out["modified_bytes"] = stats["data_chunks"] * 4096
        out["steps"].append({"step": step, "bytes": stats["output_bytes"],
                             "mode": stats["mode"], "stats": stats})
    shutil.rmtree(snap, ignore_errors=True)
    return out


class Results:
    """results.json, rewritten after every cell."""

    def __init__(self, path, resume, meta, seed=None):
        self.path = path
        self.data = {"machine": machine(), "meta": meta, "cells": [],
                     "breakdown": {}}
        # A seed (the published docs/bench/results.json) carries an
        # earlier run's cells, so a matrix too long for one sitting can be
        # completed over several; cells measured here replace seeded ones.
        for old_path in ([seed] if seed else []) + (
                [path] if resume and os.path.exists(path) else []):
            with open(old_path) as f:
                old = json.load(f)
            for c in old.get("cells", []):
                self.add(c, save=False)
            self.data["breakdown"].update(old.get("breakdown", {}))

    def cell(self, workload, profile, system):
        """A cell already measured: completed, or ended by the time limit
        (failures and harness errors are measured again)."""
        for c in self.data["cells"]:
            if c["status"] not in ("completed", "cancelled"):
                continue
            if (c["workload"], c["profile"], c["method"]) == \
                    (workload, profile, system):
                return c
        return None

    def add(self, result, save=True):
        key = (result["workload"], result["profile"], result["method"])
        self.data["cells"] = [c for c in self.data["cells"] if (
            c["workload"], c["profile"], c["method"]) != key] + [result]
        if save:
            self.save()

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def _semantic_note(r):
    """What the semantic layer gave a cell, for its progress line."""
    g, h = r.get("guest"), r.get("handoff") or {}
    if not g:
        return ""
    note = (f"; trimmed {g['trimmed_bytes'] / 2**20:.0f} MiB, MemFree "
            f"{g['mem_free_bytes'] / 2**20:.0f} MiB")
    if h:
        note += (f", sent as free {h.get('free-memory', 0) / 2**20:.0f} MiB"
                 f" ({h.get('agent-reports', 0)} agent reports), "
                 f"{h.get('zero-run', 0)} chunks in zero runs")
    return note


def _variants(name, cache):
    """variant(semantic) -> the workload `name`, prepared on first use:
    the semantic systems move its semantic variant (workloads.py)."""
    made = {}

    def variant(semantic):
        if semantic not in made:
            label = f"{name} (semantic layer)" if semantic else name
            print(f"bench: preparing workload {label}")
            made[semantic] = make_workload(name, cache, semantic).prepare(
                log=lambda m: print(f"  {m}", flush=True))
        return made[semantic]
    return variant


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI-size guest, 25 Mbit/s, handoff and stock only")
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS + [
        "test-dirty"])
    ap.add_argument("--profiles", nargs="+", choices=sorted(PROFILES))
    ap.add_argument("--systems", nargs="+", choices=sorted(METHODS))
    ap.add_argument("--rtt", type=float, default=50, help="ms (50)")
    ap.add_argument("--out", help="results directory (build/bench/full, "
                                  "or build/bench/quick with --quick)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the cells OUT/results.json already has")
    ap.add_argument("--seed", metavar="RESULTS_JSON",
                    help="count the cells of an earlier run's results "
                         "(e.g. docs/bench/results.json) as measured")
    ap.add_argument("--redo", action="store_true",
                    help="with --resume: measure the selected cells again")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--docs", metavar="DIR",
                    help="also write summary, plots and results (timelines "
                         "of the dynamic link only) to DIR")
    args = ap.parse_args(argv)

    base = QUICK if args.quick else {"workloads": WORKLOADS,
                                     "profiles": list(PROFILES),
                                     "systems": SYSTEMS}
    workloads = args.workloads or base["workloads"]
    profiles = args.profiles or base["profiles"]
    systems = args.systems or base["systems"]
    out = os.path.abspath(args.out or os.path.join(
        BUILD, "bench", "quick" if args.quick else "full"))
    os.makedirs(out, exist_ok=True)
    results = Results(os.path.join(out, "results.json"),
                      args.resume or args.report_only,
                      {"rtt_ms": args.rtt, "profiles": {
                          p: PROFILES[p] for p in profiles}}, args.seed)
    if args.report_only:
        bench_report.write(results.data, out)
        if args.docs:
            bench_report.publish(results.data, args.docs)
        return 0

    cache = os.path.join(BUILD, "bench", "cache")
    cells = [(w, p, s) for w in workloads for p in profiles for s in systems]
    todo = [c for c in cells if args.redo or not results.cell(*c)]
    print(f"bench: {len(cells)} cells ({len(cells) - len(todo)} already "
          f"done), results in {out}")
    failures = 0
    n = len(cells) - len(todo)
    started = time.monotonic()
    # Cells work in build/bench (a fresh clone has none until now).
    os.makedirs(os.path.join(BUILD, "bench"), exist_ok=True)
    for name in workloads:
        mine = [c for c in todo if c[0] == name]
        need_breakdown = not args.no_breakdown and \
            name not in results.data["breakdown"]
        if not mine and not need_breakdown:
            continue
        variant = _variants(name, cache)
        if need_breakdown:
            work = tempfile.mkdtemp(prefix=f"qemu-handoff-{name}-",
                                    dir=os.path.join(BUILD, "bench"))
            try:
                results.data["breakdown"][name] = overlay_breakdown(
                    variant(False), work, lambda m: print(m, flush=True))
                results.save()
            finally:
                shutil.rmtree(work, ignore_errors=True)
        for (_, profile, system) in mine:
            workload = variant(bool(METHODS[system].get("semantic")))
            n += 1
            label = f"[{n}/{len(cells)}] {name} {profile:>7} {system:<18}"
            work = tempfile.mkdtemp(prefix="qemu-handoff-cell-",
                                    dir=os.path.join(BUILD, "bench"))
            try:
                r = run_move(system, work, workload, PROFILES[profile],
                             args.rtt, progress=progress_line(label),
                             verify=not args.no_verify)
            except Exception as e:  # a harness failure is a result too
                r = {"method": system, "workload": name, "status": "error",
                     "error": f"{type(e).__name__}: {e}"}
            finally:
                shutil.rmtree(work, ignore_errors=True)
            r["profile"] = profile
            results.add(r)
            if r["status"] == "completed":
                print(f"\r  {label} {r['total_time_ms'] / 1000:7.1f} s, "
                      f"guest downtime {r['guest_downtime_ms']} ms, "
                      f"{r['wire_bytes'] / 1e6:.1f} MB on the wire"
                      f"{', verified' if r.get('verified') else ''}"
                      f"{_semantic_note(r)}" + " " * 30)
            else:
                failures += 1
                print(f"\r  {label} {r['status']}: {r['error']}" + " " * 30)
    print(f"bench: done in {(time.monotonic() - started) / 60:.1f} min")
    bench_report.write(results.data, out)
    if args.docs:
        bench_report.publish(results.data, args.docs)
    print(f"bench: {out}/summary.md, {out}/plots/")
    return 1 if failures else 0
