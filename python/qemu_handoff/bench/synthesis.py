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

--early-start adds, per application, an early-start overlay made from
the same one and synthesized with early start beside it, run by run
(bench/synthesis_early.py says what is measured).

The service runs as it does by default, mutual TLS and every VM confined,
unless --insecure (plaintext: `serve --insecure` on the namespace's
loopback, where the delay relay connects to it; the client sends in
plaintext to the relay's end of the link, an address on this machine
that `handoff-synthesis.py synthesize --insecure` itself would refuse,
not being loopback) or --unconfined (`serve --unconfined`). --alternate
measures the service's default too, run by run, on the same overlay.

--loopback measures the launch alone: the test guest's overlay (small)
synthesized on 127.0.0.1 with no emulated link, by four services at once
(TLS or plaintext, confined or not, each warmed by one synthesis), runs
alternating between them; the service's timings (QEMU's launch, and the
total from the request to the VM running) go to OUT/results.json and
OUT/summary.md.
"""

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import time

from ..paths import BUILD, TOP
from ..guest import free_tcp_port
from ..wan import WanLink
from ..workloads import TestWorkload, make_workload
from ..synthesis.base_check import TOOL as BASE_TOOL
from ..synthesis.client import ask, manage, synthesize
from ..synthesis.transport import client_context
from ..tls import CertificateAuthority
from .matrix import CLI, snapshot_images
from .synthesis_early import (make_early_start_overlay, report_early,
                              synthesize_early)

SYNTHESIS = os.path.join(TOP, "scripts", "handoff-synthesis.py")
SERVICE_NAME = "cloudlet.test"
APP_PORTS = {"face": 8001, "ocr": 8002}
REQUESTS = {"face": "/usr/share/handoff-edge/face.jpg",
            "ocr": "/usr/share/handoff-edge/ocr.png"}


# How the service runs: its default is mutual TLS, VMs confined.
DEFAULT = {"tls": True, "confined": True}
VARIANTS = [DEFAULT, {"tls": True, "confined": False},
            {"tls": False, "confined": True},
            {"tls": False, "confined": False}]


def log(msg):
    print(f"bench-synthesis: {msg}", flush=True)


def variant_name(variant):
    return (f"{'mutual TLS' if variant['tls'] else 'plaintext'}, "
            f"{'confined' if variant['confined'] else 'unconfined'}")


def make_credentials(work):
    """The CA, the service's and the client's TLS credentials, once."""
    # Absolute: certtool runs in the CA's directory (--out may be
    # relative).
    creds = os.path.abspath(os.path.join(work, "tls"))
    if not os.path.isdir(creds):
        os.makedirs(creds)
        ca = CertificateAuthority(creds, "ca")
        ca.credentials(creds, "service", "server", SERVICE_NAME)
        ca.credentials(creds, "client", "client", "bench")
    return creds


def serve_command(variant, bases, listen_port, workdir, forward_address,
                  creds):
    """`handoff-synthesis.py serve` on 127.0.0.1:@listen_port, as
    @variant says. Its --workdir absolute: a confined QEMU's directory
    is bound into its mount namespace by path."""
    return [sys.executable, SYNTHESIS, "serve", "--bases", bases,
            "--listen", f"127.0.0.1:{listen_port}", "--workdir",
            os.path.abspath(workdir),
            "--forward-address", forward_address,
            *(["--tls-creds", os.path.join(creds, "service")]
              if variant["tls"] else ["--insecure"]),
            *([] if variant["confined"] else ["--unconfined"]),
            "--stop-vms-on-exit"]


def client_tls(variant, creds):
    """synthesize()'s tls and tls_name arguments for @variant."""
    if not variant["tls"]:
        return {"tls": None}
    return {"tls": client_context(os.path.join(creds, "client")),
            "tls_name": SERVICE_NAME}


def wait_serving(service, log_path, timeout=600):
    """Waits for the service's "serving" line (it listens then) and, with
    the engine's tool to verify bases, for its bases verified at start:
    a cloudlet's service runs long before a synthesis comes, and a cell
    measures the synthesis, not the service's first seconds."""
    lines = ["handoff-synthesis: serving"]
    if os.access(BASE_TOOL, os.X_OK):
        lines.append("handoff-synthesis: bases verified at start")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path) as f:
            text = f.read()
        if all(line in text for line in lines):
            return
        if service.poll() is not None:
            break
        time.sleep(0.1)
    with open(log_path) as f:
        raise RuntimeError(f"the service did not start: {f.read()[-2000:]}")


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


def save_overlay(src, path, app, timeout):
    """handoff-overlay-save of @src (@app's VM) to @path, lzma-6; returns
    the seconds it took."""
    t0 = time.monotonic()
    src.qmp.cmd("handoff-overlay-save", path=path, base=app.base_dir)
    info = src.wait_migration(timeout=timeout)
    if info["status"] != "completed":
        raise RuntimeError(f"saving {app.name}: {info}")
    return time.monotonic() - t0


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
        save_s = save_overlay(src, path, app, timeout=3600)
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


def synthesize_over(app, overlay, rate, rtt, work, variant=DEFAULT,
                    early=False):
    """One cell: the service behind a @rate Mbit/s link; returns figures.
    @early: @overlay is an early-start overlay, synthesized with early
    start (synthesis_early.py)."""
    bases = os.path.join(work, "bases")
    os.makedirs(bases, exist_ok=True)
    if not os.path.exists(os.path.join(bases, "edge")):
        os.symlink(app.base_dir, os.path.join(bases, "edge"))
    creds = make_credentials(work)
    with WanLink(rate_mbit=rate, rtt_ms=rtt) as link:
        port = free_tcp_port()
        log_path = os.path.join(work, "service.log")
        with open(log_path, "w") as slog:
            service = subprocess.Popen(link.ns_command(serve_command(
                variant, bases, port, os.path.join(work, "vms"),
                link.ns_addr, creds)), stdout=slog,
                stderr=subprocess.STDOUT)
            try:
                wait_serving(service, log_path)
                addr = link.relay_to(port)
                if early:
                    answer, figures = synthesize_early(
                        addr, link.ns_addr, overlay, app,
                        APP_PORTS[app.name], REQUESTS[app.name],
                        client_tls(variant, creds))
                t0 = time.monotonic()
                if not early:
                    result = synthesize(
                        addr, overlay, forward=[APP_PORTS[app.name]],
                        name=app.name, progress=None,
                        **client_tls(variant, creds))
                    answer, request_s = first_request(
                        link.ns_addr,
                        result["ports"][str(APP_PORTS[app.name])],
                        REQUESTS[app.name])
                    first = time.monotonic() - t0
            finally:
                service.terminate()
                service.wait(timeout=60)
    want = {k: v for k, v in app.reply.items() if k != "ms"}
    got = {k: v for k, v in answer.items() if k != "ms"}
    if got != want:
        raise RuntimeError(f"{app.name}: answer {got}, expected {want}")
    if early:
        return {"app": app.name, "rate_mbit": rate, "rtt_ms": rtt,
                "variant": dict(variant), **figures, "answer": answer,
                "load": os.getloadavg()[0]}
    t = result["timings"]
    return {"app": app.name, "rate_mbit": rate, "rtt_ms": rtt,
            "variant": dict(variant),
            "first_response_s": round(first, 2),
            "transfer_s": t["transfer"], "launch_s": t["launch"],
            "apply_s": t["apply"], "synthesis_s": t["total"],
            "first_request_s": round(request_s, 2), "answer": answer,
            "load": os.getloadavg()[0]}


def cell_label(cell, results):
    """The app, and how the service ran unless only its default did."""
    if results.get("variants", [DEFAULT]) == [DEFAULT]:
        return cell["app"]
    return f"{cell['app']}, {variant_name(cell['variant'])}"


def report(results, out):
    rows = ["| app | link | first response | transfer | launch "
            "(overlapped) | apply after transfer | first request |",
            "|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        if c.get("early_start"):
            continue                    # report_early's rows
        rows.append(f"| {cell_label(c, results)} | {c['rate_mbit']} Mbit/s, "
                    f"{c['rtt_ms']} "
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
    if any(c.get("early_start") for c in results["cells"]):
        rows += report_early(results)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))
    plot(results, os.path.join(out, "synthesis.png"))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cells = [c for c in results["cells"] if not c.get("early_start")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{cell_label(c, results)}\n{c['rate_mbit']} Mbit/s"
              for c in cells]
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


def save_test_overlay(app, work):
    """The test guest after its mixed workload, paused and saved as an
    overlay (tests/integration/test_synthesis.py's `saved`)."""
    src = app.start_source(work)
    try:
        src.qmp.cmd("stop")
        path = os.path.join(work, "test.overlay")
        save_s = save_overlay(src, path, app, timeout=600)
    finally:
        src.stop()
    return {"path": path, "overlay_bytes": os.path.getsize(path),
            "save_s": round(save_s, 1)}


def launch_on_loopback(cache, out, runs):
    """--loopback: the service's launch of a small overlay, in every
    variant, on 127.0.0.1; returns the results."""
    app = TestWorkload(cache).prepare(log=log)
    work = os.path.join(out, "test")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    log("test: saving the overlay")
    overlay = save_test_overlay(app, work)
    log(f"test: {json.dumps(overlay)}")
    bases = os.path.join(work, "bases")
    os.makedirs(bases)
    os.symlink(app.base_dir, os.path.join(bases, "test"))
    creds = make_credentials(work)
    services = []
    results = {"overlays": {"test": overlay}, "variants": VARIANTS,
               "launches": []}
    try:
        for n, variant in enumerate(VARIANTS):
            port = free_tcp_port()
            log_path = os.path.join(work, f"service-{n}.log")
            with open(log_path, "w") as slog:
                proc = subprocess.Popen(serve_command(
                    variant, bases, port, os.path.join(work, f"vms-{n}"),
                    "127.0.0.1", creds), stdout=slog,
                    stderr=subprocess.STDOUT)
            services.append((proc, port))
            wait_serving(proc, log_path)
            # The first synthesis of a service verifies the base: not
            # measured.
            one_launch(variant, port, overlay["path"], creds, "warm-up")
        for run in range(runs):
            for variant, (_, port) in zip(VARIANTS, services):
                t = one_launch(variant, port, overlay["path"], creds,
                               f"run {run + 1}")
                results["launches"].append(
                    {"variant": dict(variant), "run": run + 1,
                     "launch_s": t["launch"], "total_s": t["total"],
                     "transfer_s": t["transfer"], "apply_s": t["apply"],
                     "load": os.getloadavg()[0]})
                with open(os.path.join(out, "results.json"), "w") as f:
                    json.dump(results, f, indent=1)
    finally:
        for proc, _ in services:
            proc.terminate()
            proc.wait(timeout=60)
    return results


def one_launch(variant, port, overlay, creds, what):
    """One synthesis of @overlay by the service on 127.0.0.1:@port; its
    VM is stopped once running. Returns the service's timings."""
    tls = client_tls(variant, creds)
    result = synthesize(("127.0.0.1", port), overlay, name="test",
                        progress=None, **tls)
    manage(("127.0.0.1", port), {"op": "stop", "name": result["vm"]},
           **tls)
    log(f"loopback, {variant_name(variant)}, {what}: "
        f"{json.dumps(result['timings'])}")
    return result["timings"]


def spread(values):
    return (f"{statistics.median(values):.2f} s "
            f"({min(values):.2f}–{max(values):.2f})")


def report_launches(results, out):
    rows = ["| service | runs | launch | transfer | apply after transfer "
            "| request to VM running |", "|---|---|---|---|---|---|"]
    for variant in results["variants"]:
        cells = [c for c in results["launches"] if c["variant"] == variant]
        rows.append(f"| {variant_name(variant)} | {len(cells)} | " +
                    " | ".join(spread([c[k] for c in cells]) for k in (
                        "launch_s", "transfer_s", "apply_s", "total_s")) +
                    " |")
    rows += ["", "Medians (min–max)."]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


def reusable(args):
    """The overlays of the last run into --out, and their facts, if the
    files are still there (--reuse-overlays)."""
    try:
        with open(os.path.join(args.out, "results.json")) as f:
            last = json.load(f)
    except (OSError, ValueError):
        return {}
    if last.get("semantic") != args.semantic:
        return {}               # the other variant's overlays
    return {kind: {name: facts for name, facts in last.get(kind, {}).items()
                   if os.path.exists(facts["path"])}
            for kind in ("overlays", "early_overlays")}


def overlays(args, app, work, results, before):
    """[(overlay path, early start)] of @app to synthesize: made in
    @work, or those of @before (the last run's) when it has them."""
    name = app.name
    old = before.get("overlays", {}).get(name)
    old_early = before.get("early_overlays", {}).get(name)
    if old and (old_early or not args.early_start):
        log(f"{name}: the last run's overlays, reused")
        results["overlays"][name] = old
        paths = [(old["path"], False)]
        if args.early_start:
            results.setdefault("early_overlays", {})[name] = old_early
            paths.append((old_early["path"], True))
        return paths
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    log(f"{name}: saving the overlay")
    overlay = make_overlay(app, work)
    results["overlays"][name] = overlay
    log(f"{name}: {json.dumps(overlay)}")
    paths = [(overlay["path"], False)]
    if args.early_start:
        log(f"{name}: recording its working set, saving it again")
        early = make_early_start_overlay(
            app, overlay["path"], work, APP_PORTS[name], REQUESTS[name])
        results.setdefault("early_overlays", {})[name] = early
        log(f"{name}: {json.dumps(early)}")
        paths.append((early["path"], True))
    return paths


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
    ap.add_argument("--insecure", action="store_true",
                    help="plaintext: serve --insecure (on the namespace's "
                    "loopback) and a client without TLS")
    ap.add_argument("--unconfined", action="store_true",
                    help="serve --unconfined: VMs not confined")
    ap.add_argument("--alternate", action="store_true",
                    help="each run measures the service's default (mutual "
                    "TLS, confined) too, first")
    ap.add_argument("--runs", type=int, default=1,
                    help="measurements of each cell (1)")
    ap.add_argument("--early-start", action="store_true",
                    help="also an early-start overlay of each application "
                    "(its first request's working set recorded, then "
                    "saved again), synthesized with early start beside "
                    "the plain one, run by run")
    ap.add_argument("--reuse-overlays", action="store_true",
                    help="the overlays the last run into --out made "
                    "(results.json), if their files are there: the cells "
                    "again without saving, recording and re-saving")
    ap.add_argument("--loopback", action="store_true",
                    help="only the launch of the test guest's overlay on "
                    "127.0.0.1, by a service of every variant, --runs "
                    "times each, alternating")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.loopback:
        report_launches(launch_on_loopback(args.cache, args.out, args.runs),
                        args.out)
        return
    chosen = {"tls": not args.insecure, "confined": not args.unconfined}
    variants = [DEFAULT] if chosen == DEFAULT else \
        [DEFAULT, chosen] if args.alternate else [chosen]
    results = {"overlays": {}, "cells": [], "semantic": args.semantic,
               "variants": variants}
    before = reusable(args) if args.reuse_overlays else {}
    for name in args.apps:
        app = make_workload(name, args.cache,
                            semantic=args.semantic).prepare(log=log)
        work = os.path.join(args.out, name)
        paths = overlays(args, app, work, results, before)
        for rate in args.rates:
            for run in range(args.runs):
                for variant, (path, early) in (
                        (v, p) for v in variants for p in paths):
                    log(f"{name}: synthesis at {rate} Mbit/s, {args.rtt} "
                        f"ms, {variant_name(variant)}"
                        f"{', early start' if early else ''}")
                    cell = synthesize_over(app, path, rate, args.rtt,
                                           os.path.join(work, f"{rate}"),
                                           variant, early)
                    cell["run"] = run + 1
                    results["cells"].append(cell)
                    log(f"{name}: {json.dumps(cell)}")
                    with open(os.path.join(args.out, "results.json"),
                              "w") as f:
                        json.dump(results, f, indent=1)
    report(results, args.out)
