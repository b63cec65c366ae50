# SPDX-License-Identifier: GPL-2.0-or-later
"""bench-breakdown: the edge VMs' modified state by what it is, before and
after the guest cleans up for the semantic layer.

For each edge application (face, ocr, physics), the semantic variant's
prepared VM (qemu_handoff.workloads: the guest agent's port and a
discard=unmap drive) is restored and sent one request, as the benchmarks
do before a move. scripts/vm-breakdown.py then breaks its state down twice
on the running VM:

  before   as it stands: what a handoff without the semantic layer meets
  after    once the guest ran `clean` (apt-get clean; sync; fstrim -av), as
           the semantic benchmark's guests do before they move

The disk by directory of the guest filesystem (blocks of deleted files,
the journal and metadata named as such; discarded blocks are zero
clusters, sent as zero runs), the memory by the guest agent's page
classes (free pages are what the agent keeps off the wire). The guest
runs `sync` before each reading so that the overlay holds what the guest
wrote and trimmed. Results go to OUT/results.json and OUT/summary.md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

from ..paths import BUILD, TOP
from ..workloads import make_workload
from ..breakdown.report import MEMORY_ROWS

BREAKDOWN = os.path.join(TOP, "scripts", "vm-breakdown.py")
MIB = 1 << 20
PHASES = ("before", "after")
# Directories shown per application: its largest in either phase.
TOP_DIRECTORIES = 8
DISK_ROWS = (("free_blocks_deleted_files", "free blocks (deleted files)"),
             ("unnamed_files", "files without a name"),
             ("journal", "ext4 journal"),
             ("metadata", "filesystem metadata"),
             ("outside_filesystems", "outside the filesystem"))


def log(msg):
    print(f"bench-breakdown: {msg}", flush=True)


def breakdown(vm, qmp_path, base_dir):
    """vm-breakdown's JSON document for the running @vm."""
    vm.shell("sync")
    proc = subprocess.run(
        [sys.executable, BREAKDOWN, "-U", "-q", "--json",
         "--qmp", qmp_path, "--base", base_dir, vm.disk],
        capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"vm-breakdown: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def measure(app_name, cache, out):
    app = make_workload(app_name, cache, semantic=True).prepare(log)
    work = os.path.join(out, app_name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    # A monitor of the tool's own: the harness holds the VM's.
    qmp_path = os.path.join(work, "breakdown.qmp")
    src = app.start_source(work, clean=False, extra_args=[
        "-qmp", f"unix:{qmp_path},server=on,wait=off"])
    try:
        log(f"{app_name}: before")
        before = breakdown(src, qmp_path, app.base_dir)
        log(f"{app_name}: cleaning (apt-get clean; fstrim)")
        app.clean(src)
        log(f"{app_name}: after")
        after = breakdown(src, qmp_path, app.base_dir)
    finally:
        src.stop()
    shutil.rmtree(work, ignore_errors=True)
    return {"before": before, "after": after,
            "trimmed_bytes": app.facts["trimmed_bytes"],
            "mem_free_bytes": app.facts["mem_free_bytes"]}


def _mib(n):
    return f"{n / MIB:.1f}"


def _row(name, values):
    return f"| {name} | " + " | ".join(_mib(v) for v in values) + " |"


def _directories(result):
    """The application's largest directories in either phase, by path."""
    sizes = {p: {} for p in PHASES}
    for phase in PHASES:
        for d in result[phase]["disk"]["directories"]:
            sizes[phase][d["path"]] = d["bytes"]
    paths = sorted(set(sizes["before"]) | set(sizes["after"]),
                   key=lambda p: -max(sizes["before"].get(p, 0),
                                      sizes["after"].get(p, 0)))
    return [(p, [sizes[ph].get(p, 0) for ph in PHASES])
            for p in paths[:TOP_DIRECTORIES]], paths[TOP_DIRECTORIES:], sizes


def app_table(name, result):
    disks = [result[p]["disk"] for p in PHASES]
    mems = [result[p]["memory"] for p in PHASES]
    lines = [f"### {name}", "",
             f"`clean` trimmed {_mib(result['trimmed_bytes'])} MiB; "
             f"MemFree after it {_mib(result['mem_free_bytes'])} MiB.", "",
             "| MiB | before | after |", "|---|---|---|",
             _row("**disk: data clusters (sent unless deduplicated)**",
                  [d["data_bytes"] for d in disks])]
    shown, rest, sizes = _directories(result)
    for path, values in shown:
        lines.append(_row(f"`{path}`", values))
    if rest:
        lines.append(_row(f"{len(rest)} more directories",
                          [sum(sizes[ph].get(p, 0) for p in rest)
                           for ph in PHASES]))
    for key, label in DISK_ROWS:
        lines.append(_row(label, [d["categories"][key] for d in disks]))
    lines.append(_row("**disk: zero clusters (sent as zero runs)**",
                      [d["zero_bytes"] for d in disks]))
    lines.append(_row("**memory: modified pages**",
                      [m["modified_bytes"] for m in mems]))
    for key, label in MEMORY_ROWS:
        lines.append(_row(label.strip("[]"),
                          [m["classes"][key] for m in mems]))
    lines.append(_row("**memory left to send (modified, not free)**",
                      [m["modified_bytes"] - m["classes"]["free"]
                       for m in mems]))
    return lines + [""]


def report(results, out):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    lines = ["# The edge VMs' modified state, before and after cleaning up",
             "", "Produced by `scripts/bench-breakdown.py` (directories to "
             "depth 3; memory against the base's memory image, by the "
             "guest agent's page classes).", ""]
    for name, result in results.items():
        lines += app_table(name, result)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", nargs="+", default=["ocr", "face", "physics"],
                    choices=["ocr", "face", "physics"])
    ap.add_argument("--out", default=os.path.join(BUILD, "bench",
                                                  "breakdown"))
    ap.add_argument("--cache", default=os.path.join(BUILD, "bench", "cache"))
    ap.add_argument("--docs", metavar="DIR",
                    help="also copy results.json and summary.md to DIR")
    ap.add_argument("--report-only", action="store_true",
                    help="write summary.md from OUT/results.json")
    opts = ap.parse_args()
    os.makedirs(opts.out, exist_ok=True)
    if opts.report_only:
        with open(os.path.join(opts.out, "results.json")) as f:
            results = json.load(f)
    else:
        results = {name: measure(name, opts.cache, opts.out)
                   for name in opts.apps}
    report(results, opts.out)
    if opts.docs:
        os.makedirs(opts.docs, exist_ok=True)
        for f in ("results.json", "summary.md"):
            shutil.copy(os.path.join(opts.out, f), opts.docs)
