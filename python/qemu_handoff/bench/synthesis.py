# SPDX-License-Identifier: GPL-2.0-or-later
"""bench-synthesis: time to first response of VMs synthesized from overlays.

For each edge application (face, ocr), the prepared VM (qemu_handoff.
workloads) is restored, sent one request (its working set warm), paused
and saved as a VM overlay (handoff-overlay-save, lzma-6). Its modified
state (chunks that differ from the base, as scripts/bench.py counts them)
and a compressed image of the whole VM (disk flattened and RAM, zstd -9)
are measured beside it. Then, per link (tc tbf + 50 ms RTT delay relay into
a network namespace), a synthesis service runs in the namespace and the
client synthesizes the overlay with the application's port forwarded and
sends its first request through it:

  first response = client starts sending -> the application's answer
  arrives, broken down into transfer, apply after the transfer, and the
  first request (QEMU's launch overlaps the transfer).

The answer must be the one the prepared VM gave. Results go to
OUT/results.json, OUT/summary.md and OUT/synthesis.png.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from ..paths import BUILD, TOP
from ..guest import free_tcp_port
from ..wan import WanLink
from ..workloads import make_workload
from ..synthesis.client import ask, synthesize
from ..synthesis.transport import client_context
from ..tls import CertificateAuthority
from .matrix import CLI, snapshot_images

SYNTHESIS = os.path.join(TOP, "scripts", "handoff-synthesis.py")
SERVICE_NAME = "cloudlet.test"
APP_PORTS = {"face": 8001, "ocr": 8002}
REQUESTS = {"face": "/usr/share/handoff-edge/face.jpg",
            "ocr": "/usr/share/handoff-edge/ocr.png"}


def log(msg):
    print(f"bench-synthesis: {msg}", flush=True)


def modified_bytes(src, base_dir, work):
    """Chunks of the paused VM that differ from the base (neither zero nor
    the base's own), as scripts/bench.py's overlay breakdown counts them."""
    snap = os.path.join(work, "snapshot")
    src.qmp.slow_cmd(1800, "handoff-base-create", dir=snap)
    base, images = snapshot_images(snap)
    stream = os.path.join(work, "stream")
    r = subprocess.run([CLI, "encode", "--base",
                        os.path.join(base_dir, "index"), *images, "-o",
                        stream, "--json", "--codec", "zstd", "--level", "1",
                        "--no-dedup"], capture_output=True, text=True,
                       check=True)
    os.unlink(stream)
    full = full_image_bytes(snap, base, work)
    shutil.rmtree(snap)
    return json.loads(r.stdout)["data_chunks"] * 4096, full


def full_image_bytes(snap, base, work):
    """The whole VM compressed: its disk (flattened) and RAM, zstd -9."""
    files = [base.disk.path] + [m.path for m in base.memory]
    out = os.path.join(work, "full.zst")
    with open(out, "wb") as f:
        cat = subprocess.Popen(["cat", *files], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-9", "-T2", "-q", "-c"], stdin=cat.stdout,
                       stdout=f, check=True)
        cat.wait()
    size = os.path.getsize(out)
    os.unlink(out)
    return size


def make_overlay(app, work):
    """The prepared VM, warm, saved as an overlay; returns its facts."""
    src = app.start_source(work)
    try:
        # The semantic variant is saved running: its guest agent and
        # balloon can report free memory only then (the final, stopped
        # round takes no report, as in a handoff).
        if not app.semantic:
            src.qmp.cmd("stop")
        # Measured first: a saved VM's disks are handed over (inactive).
        # (handoff-base-create pauses a running VM while it saves.)
        modified, full = modified_bytes(src, app.base_dir, work)
        path = os.path.join(work, f"{app.name}.overlay")
        t0 = time.monotonic()
        src.qmp.cmd("handoff-overlay-save", path=path, base=app.base_dir)
        info = src.wait_migration(timeout=3600)
        if info["status"] != "completed":
            raise RuntimeError(f"saving {app.name}: {info}")
        save_s = time.monotonic() - t0
    finally:
        src.stop()
    return {"path": path, "overlay_bytes": os.path.getsize(path),
            "save_s": round(save_s, 1), "modified_bytes": modified,
            "full_image_zstd9_bytes": full}


def first_request(address, port, request):
    """Sends the application its request; returns (answer, seconds)."""
    t0 = time.monotonic()
    answer = ask(address, port, request)
    return answer, time.monotonic() - t0


def synthesize_over(app, overlay, rate, rtt, work):
    """One cell: the service behind a @rate Mbit/s link; returns figures."""
    bases = os.path.join(work, "bases")
    os.makedirs(bases, exist_ok=True)
    if not os.path.exists(os.path.join(bases, "edge")):
        os.symlink(app.base_dir, os.path.join(bases, "edge"))
    creds = os.path.join(work, "tls")
    if not os.path.isdir(creds):
        # The service's default, mutual TLS, is what is measured.
        os.makedirs(creds)
        ca = CertificateAuthority(creds, "ca")
        ca.credentials(creds, "service", "server", SERVICE_NAME)
        ca.credentials(creds, "client", "client", "bench")
    with WanLink(rate_mbit=rate, rtt_ms=rtt) as link:
        port = free_tcp_port()
        with open(os.path.join(work, "service.log"), "w") as slog:
            service = subprocess.Popen(link.ns_command([
                sys.executable, SYNTHESIS, "serve", "--bases", bases,
                "--listen", f"127.0.0.1:{port}", "--workdir",
                os.path.join(work, "vms"), "--forward-address", link.ns_addr,
                "--tls-creds", os.path.join(creds, "service"),
                "--stop-vms-on-exit"]),
                stdout=slog,
                stderr=subprocess.STDOUT)
            try:
                time.sleep(2)
                addr = link.relay_to(port)
                t0 = time.monotonic()
                result = synthesize(
                    addr, overlay, forward=[APP_PORTS[app.name]],
                    name=app.name, progress=None, tls_name=SERVICE_NAME,
                    tls=client_context(os.path.join(creds, "client")))
                answer, request_s = first_request(
                    link.ns_addr, result["ports"][str(APP_PORTS[app.name])],
                    REQUESTS[app.name])
                first = time.monotonic() - t0
            finally:
                service.terminate()
                service.wait(timeout=60)
    want = {k: v for k, v in app.reply.items() if k != "ms"}
    got = {k: v for k, v in answer.items() if k != "ms"}
    if got != want:
        raise RuntimeError(f"{app.name}: answer {got}, expected {want}")
    t = result["timings"]
    return {"app": app.name, "rate_mbit": rate, "rtt_ms": rtt,
            "first_response_s": round(first, 2),
            "transfer_s": t["transfer"], "launch_s": t["launch"],
            "apply_s": t["apply"], "synthesis_s": t["total"],
            "first_request_s": round(request_s, 2), "answer": answer}


def report(results, out):
    rows = ["| app | link | first response | transfer | launch "
            "(overlapped) | apply after transfer | first request |",
            "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        rows.append(f"| {c['app']} | {c['rate_mbit']} Mbit/s, {c['rtt_ms']} "
                    f"ms | **{c['first_response_s']:.1f} s** | "
                    f"{c['transfer_s']:.1f} s | {c['launch_s']:.1f} s | "
                    f"{c['apply_s']:.1f} s | {c['first_request_s']:.1f} s |")
    rows += ["", "| app | overlay | modified state | overlay / modified | "
             "whole VM, zstd -9 | save (lzma-6) |", "|---|---|---|---|---|---|"]
    for name, o in results["overlays"].items():
        rows.append(f"| {name} | {o['overlay_bytes'] / 1e6:.1f} MB | "
                    f"{o['modified_bytes'] / 1e6:.1f} MB | "
                    f"{100 * o['overlay_bytes'] / o['modified_bytes']:.1f} % | "
                    f"{o['full_image_zstd9_bytes'] / 1e6:.1f} MB | "
                    f"{o['save_s']:.0f} s |")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))
    plot(results, os.path.join(out, "synthesis.png"))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = results["cells"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{c['app']}\n{c['rate_mbit']} Mbit/s" for c in cells]
    bottom = [0.0] * len(cells)
    for key, name in (("transfer_s", "transfer"), ("apply_s", "apply"),
                      ("first_request_s", "first request")):
        vals = [c[key] for c in cells]
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("seconds to first response")
    ax.legend()
    names = list(results["overlays"])
    for i, (key, name) in enumerate((("modified_bytes", "modified state"),
                                     ("full_image_zstd9_bytes",
                                      "whole VM, zstd -9"),
                                     ("overlay_bytes", "overlay"))):
        bx.bar([j + 0.27 * (i - 1) for j in range(len(names))],
               [results["overlays"][n][key] / 1e6 for n in names],
               width=0.27, label=name)
    bx.set_xticks(range(len(names)), names)
    bx.set_ylabel("MB")
    bx.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", nargs="+", default=["ocr", "face"],
                    choices=sorted(APP_PORTS))
    ap.add_argument("--rates", nargs="+", type=int, default=[10, 38])
    ap.add_argument("--rtt", type=int, default=50)
    ap.add_argument("--out", default=os.path.join(BUILD, "bench",
                                                  "synthesis"))
    ap.add_argument("--cache", default=os.path.join(BUILD, "bench", "cache"))
    ap.add_argument("--semantic", action="store_true",
                    help="the applications' semantic variant: apt-get "
                    "clean and fstrim before the save, the guest agent and "
                    "balloon hints (qemu_handoff.workloads)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = {"overlays": {}, "cells": [], "semantic": args.semantic}
    for name in args.apps:
        app = make_workload(name, args.cache,
                            semantic=args.semantic).prepare(log=log)
        work = os.path.join(args.out, name)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        log(f"{name}: saving the overlay")
        overlay = make_overlay(app, work)
        results["overlays"][name] = overlay
        log(f"{name}: {json.dumps(overlay)}")
        for rate in args.rates:
            log(f"{name}: synthesis at {rate} Mbit/s, {args.rtt} ms")
            cell = synthesize_over(app, overlay["path"], rate, args.rtt,
                                   os.path.join(work, f"{rate}"))
            results["cells"].append(cell)
            log(f"{name}: {json.dumps(cell)}")
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump(results, f, indent=1)
    report(results, args.out)
