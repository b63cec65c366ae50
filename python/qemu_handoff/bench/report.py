# SPDX-License-Identifier: GPL-2.0-or-later
"""Tables (summary.md) and plots (plots/*.png) from a benchmark's
results.json (scripts/bench.py): only what was measured, nothing derived
beyond ratios of measured figures."""

import copy
import json
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MB = 1e6


def _ok(cells):
    return [c for c in cells if c.get("status") == "completed"]


def _order(values, preferred):
    return [v for v in preferred if v in values] + sorted(
        v for v in values if v not in preferred)


def _axes(data):
    cells = data["cells"]
    workloads = _order({c["workload"] for c in cells},
                       ["test", "ocr", "physics", "face"])
    profiles = _order({c["profile"] for c in cells},
                      ["5", "10", "25", "dynamic"])
    systems = _order({c["method"] for c in cells},
                     ["stock", "stock-xbzrle", "stock-compress",
                      "stock-multifd-zstd", "handoff", "handoff-zstd-3",
                      "handoff-lzma-1", "stock-semantic",
                      "stock-multifd-zstd-semantic", "handoff-semantic"])
    return workloads, profiles, systems


def _find(cells, workload, profile, system):
    for c in cells:
        if (c["workload"], c["profile"], c["method"]) == \
                (workload, profile, system):
            return c
    return None


def _profile_label(p):
    return f"{p} Mbit/s" if p != "dynamic" else "5→35→5"


# --- tables -------------------------------------------------------------

def _workload_cells(data, workload):
    """(profile, system, cell) of one workload, in table order."""
    _, profiles, systems = _axes(data)
    for p in profiles:
        for s in systems:
            c = _find(data["cells"], workload, p, s)
            if c:
                yield p, s, c


def _cell_table(data, workload):
    rows = ["| link | system | total time | guest downtime | QEMU downtime "
            "| bytes on the wire | source CPU | destination CPU | verified |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p, s, c in _workload_cells(data, workload):
        if c["status"] != "completed":
            sent = (f"{c['wire_bytes'] / MB:.1f} MB sent"
                    if c.get("wire_bytes") else "")
            rows.append(f"| {_profile_label(p)} | {s} | {c['status']}: "
                        f"{c.get('error') or ''} | | | {sent} | | | |")
            continue
        rows.append(
            f"| {_profile_label(p)} | {s} | "
            f"{c['total_time_ms'] / 1000:.1f} s | "
            f"{c['guest_downtime_ms']} ms | {c['downtime_ms']} ms | "
            f"{c['wire_bytes'] / MB:.1f} MB | {c['src_cpu_s']:.1f} s | "
            f"{c['dst_cpu_s']:.1f} s | "
            f"{'yes' if c.get('verified') else 'no'} |")
    return rows


def _semantic(method):
    """A system with the semantic layer (scenario.py's `*-semantic`)."""
    return method.endswith("-semantic")


def _speedup_table(data, semantic=False):
    """Handoff (auto) against the fastest stock system, each side with the
    semantic layer or each without it."""
    workloads, profiles, _ = _axes(data)
    handoff = "handoff-semantic" if semantic else "handoff"
    label = "handoff-semantic" if semantic else "handoff (auto)"
    rows = [f"| workload | link | best stock | {label} | speed-up "
            "| wire bytes, stock / handoff | guest downtime, stock / handoff |",
            "|---|---|---|---|---|---|---|"]
    for w in workloads:
        for p in profiles:
            cells = [c for c in _ok(data["cells"])
                     if c["workload"] == w and c["profile"] == p]
            stock = [c for c in cells if c["method"].startswith("stock")
                     and _semantic(c["method"]) == semantic]
            hand = [c for c in cells if c["method"] == handoff]
            if not stock or not hand:
                continue
            best = min(stock, key=lambda c: c["total_time_ms"])
            h = hand[0]
            rows.append(
                f"| {w} | {_profile_label(p)} | {best['method']} "
                f"{best['total_time_ms'] / 1000:.1f} s | "
                f"{h['total_time_ms'] / 1000:.1f} s | "
                f"{best['total_time_ms'] / h['total_time_ms']:.1f}× | "
                f"{best['wire_bytes'] / MB:.0f} / {h['wire_bytes'] / MB:.0f} MB "
                f"| {best['guest_downtime_ms']} / {h['guest_downtime_ms']} ms |")
    return rows


def _records_table(data, workload):
    rows = ["| link | system | zero | same | base-ref | self-ref | data "
            "| of which xor | output | last mode | mode switches | rounds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, s, c in _workload_cells(data, workload):
        h = c.get("handoff")
        if not h or c["status"] != "completed":
            continue
        rows.append(
            f"| {_profile_label(p)} | {s} | {h['zero']} | {h['same']} | "
            f"{h['base-ref']} | {h['self-ref']} | {h['data']} | "
            f"{h['xor-delta']} | {h['output-bytes'] / MB:.1f} MB | "
            f"{h['mode']} | {h['mode-switches']} | {h['iteration']} |")
    return rows


def _semantic_table(data):
    """What the semantic layer had to work with and what it removed."""
    rows = ["| workload | link | system | trimmed | MemFree at start "
            "| sent as free (of MemFree) | agent reports | zero-run chunks "
            "| discarded during the move | agent CPU share |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for c in _ok(data["cells"]):
        g = c.get("guest")
        if not g:
            continue
        h = c.get("handoff")
        mib = 2**20
        cols = [c["workload"], _profile_label(c["profile"]), c["method"],
                f"{g['trimmed_bytes'] / mib:.0f} MiB",
                f"{g['mem_free_bytes'] / mib:.0f} MiB"]
        if h:   # stock says nothing of what the hints or zeros saved
            cols += [f"{h['free-memory'] / mib:.0f} MiB "
                     f"({h['free-memory'] / g['mem_free_bytes']:.0%})",
                     str(h["agent-reports"]), str(h["zero-run"]),
                     f"{h['discarded'] / mib:.1f} MiB"]
        else:
            cols += ["-"] * 4
        share = g.get("agent_cpu_share")
        cols.append(f"{share:.3%}" if share is not None else "-")
        rows.append("| " + " | ".join(cols) + " |")
    return rows


# The offline steps end where a live move starts: the same VM moved at
# 10 Mbit/s, then its semantic variant (its guest trimmed and cleaned up,
# the agent's free pages left out), when the run measured them.
LIVE_STEPS = (("handoff, live at 10 Mbit/s", "handoff"),
              ("+ semantic layer, live", "handoff-semantic"))


def _steps(data, workload, b):
    """(step, bytes or None) of @workload's breakdown @b: the offline
    encodings, then the live moves if any workload has them."""
    steps = [(s["step"], s["bytes"]) for s in b["steps"]]
    cells = _ok(data["cells"])
    if any(_find(cells, w, "10", "handoff-semantic")
           for w in data["breakdown"]):
        for step, system in LIVE_STEPS:
            c = _find(cells, workload, "10", system)
            steps.append((step, c["wire_bytes"] if c else None))
    return steps


def _breakdown_table(data):
    items = [(w, b, _steps(data, w, b)) for w, b in data["breakdown"].items()]
    rows = ["| workload | modified state | " + " | ".join(
        step for step, _ in items[0][2]) + " |"]
    rows.append("|---" * (len(rows[0].split("|")) - 2) + "|")
    for w, b, steps in items:
        mod = b["modified_bytes"]
        cols = [f"{n / MB:.1f} MB ({n / mod:.0%})" if n is not None else "-"
                for _, n in steps]
        rows.append(f"| {w} | {mod / MB:.1f} MB | " + " | ".join(cols) + " |")
    return rows


def summary(data):
    m = data["machine"]
    lines = ["# Benchmark results", "",
             f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, "
             f"kernel {m['kernel']}, guests under TCG; {m['qemu']}.",
             f"Links: tbf-shaped veth into a network namespace, "
             f"{data['meta']['rtt_ms']:g} ms RTT added by a delay relay.", ""]
    workloads, _, _ = _axes(data)
    if len(_speedup_table(data)) > 2:
        lines += ["## Handoff versus the best stock configuration", ""]
        lines += _speedup_table(data) + [""]
    if len(_speedup_table(data, semantic=True)) > 2:
        lines += ["## With the semantic layer (TRIM, guest agent, balloon "
                  "hints) on both sides", ""]
        lines += _speedup_table(data, semantic=True) + [""]
        lines += _semantic_table(data) + [""]
    for w in workloads:
        lines += [f"## {w}", ""] + _cell_table(data, w) + [""]
        rec = _records_table(data, w)
        if len(rec) > 2:
            lines += [f"Handoff records ({w}, chunks of 4 KiB):", ""]
            lines += rec + [""]
    if data.get("breakdown"):
        lines += ["## Overlay size: what each technique removes", "",
                  "The VM's state as it is moved, encoded offline by "
                  "`qemu-handoff encode` against the base; percentages of "
                  "the modified state (chunks differing from the base).", ""]
        lines += _breakdown_table(data) + [""]
    return "\n".join(lines)


# --- plots --------------------------------------------------------------

def _bars(data, value, ylabel, title, path, log=True):
    workloads, profiles, systems = _axes(data)
    fig, axes = plt.subplots(1, len(workloads), squeeze=False,
                             figsize=(4.5 * len(workloads), 4.2))
    width = 0.8 / max(1, len(systems))
    for ax, w in zip(axes[0], workloads):
        seen = []
        for i, s in enumerate(systems):
            xs, ys = [], []
            for j, p in enumerate(profiles):
                c = _find(data["cells"], w, p, s)
                if c and c["status"] == "completed":
                    xs.append(j + (i - (len(systems) - 1) / 2) * width)
                    ys.append(value(c))
            bars = ax.bar(xs, ys, width, label=s,
                          hatch="//" if s.startswith("stock") else None)
            ax.bar_label(bars, fmt="%.0f", fontsize=6)
            seen += ys
        ax.set_xticks(range(len(profiles)))
        ax.set_xticklabels([_profile_label(p) for p in profiles])
        ax.set_title(w)
        if log:
            ax.set_yscale("log")
            seen = [v for v in seen if v > 0]
            if seen:
                # Bars on a log axis need a floor well under the smallest.
                ax.set_ylim(bottom=10 ** math.floor(math.log10(min(seen) / 2)))
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rate(tl, key, window):
    """Mbit/s of a counter over a trailing window of `window` seconds."""
    out, k = [], 0
    for i, p in enumerate(tl):
        while tl[k]["t"] < p["t"] - window:
            k += 1
        dt = p["t"] - tl[k]["t"]
        out.append((p[key] - tl[k][key]) * 8 / 1e6 / dt if dt > 0 else 0)
    return out


def _adaptation(data, path):
    """Per workload moved under the dynamic link: what the link allowed,
    what the controller read and chose, what crossed the wire, and when
    each system finished."""
    cells = [c for c in _ok(data["cells"]) if c["profile"] == "dynamic"]
    autos = [c for c in cells if c["method"] == "handoff"]
    if not autos:
        return False
    fig, axes = plt.subplots(2, len(autos), squeeze=False, sharex="col",
                             figsize=(6 * len(autos), 6.5))
    for col, auto in enumerate(autos):
        # Samples before the first statistics (setup) have none.
        tl = [p for p in auto["timeline"] if "input-bytes" in p]
        t = [p["t"] for p in tl]
        peers = sorted((c for c in cells if c["workload"] == auto["workload"]),
                       key=lambda c: c["total_time_ms"])
        # The handoff systems set the scale: a stock move several times
        # longer would squeeze them into a corner; it is named at the edge.
        end = 1.15 * max(c["total_time_ms"] for c in peers
                         if c["method"].startswith("handoff")) / 1000
        ax = axes[0][col]
        sched = [s for s in auto["schedule"] if s[0] < end]
        sched = sched + [[end, sched[-1][1]]]
        ax.step([s[0] for s in sched], [s[1] for s in sched], where="post",
                color="grey", lw=2, alpha=0.6, label="link rate (tbf)")
        ax.plot(t, [(p.get("bandwidth") or 0) * 8 / 1e6 for p in tl], ".",
                ms=3, label="controller's bandwidth reading")
        ax.plot(t, _rate(tl, "wire", 2.0), lw=1,
                label="bytes on the wire (2 s average)")
        ax.set_ylim(0, max(s[1] for s in auto["schedule"]) * 1.6)
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{auto['workload']}: handoff (auto) under 5→35→5 Mbit/s")
        for n, c in enumerate(peers):
            x = c["total_time_ms"] / 1000
            y = ax.get_ylim()[1] * (0.98 - 0.12 * (n % 4))
            if x > end:
                ax.text(end, y, f"{c['method']} {x:.0f} s →", fontsize=6,
                        va="top", ha="right")
                continue
            ax.axvline(x, ls=":" if c["method"].startswith("stock") else "--",
                       lw=0.8, color="C3" if c["method"] == "handoff" else "k")
            ax.text(x, y, f" {c['method']} {x:.0f} s", fontsize=6, va="top")
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
        modes = [p.get("mode") or "" for p in tl]
        names = sorted({m for m in modes if m})
        ax2 = axes[1][col]
        ax2.plot(t, [names.index(m) if m else None for m in modes], ".",
                 ms=4)
        ax2.set_yticks(range(len(names)))
        ax2.set_yticklabels(names, fontsize=7)
        ax2.set_xlabel("seconds since the move started")
        ax2.set_ylabel("mode chosen")
        ax2.set_xlim(0, end)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _breakdown_plot(data, path):
    if not data.get("breakdown"):
        return False
    items = [(w, [("modified state", b["modified_bytes"])] +
              _steps(data, w, b)) for w, b in data["breakdown"].items()]
    steps = [step for step, _ in items[0][1]]
    fig, ax = plt.subplots(figsize=(3 + 0.4 * len(steps) * len(items), 4.2))
    width = 0.8 / len(steps)
    for i, step in enumerate(steps):
        ys = [(s[i][1] or 0) / MB for _, s in items]
        ax.bar([j + (i - (len(steps) - 1) / 2) * width
                for j in range(len(items))], ys, width, label=step)
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels([w for w, _ in items])
    ax.set_ylabel("MB")
    ax.set_title("Overlay size, one technique added at a time "
                 "(then live moves)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(data, out):
    plots = os.path.join(out, "plots")
    os.makedirs(plots, exist_ok=True)
    made = []
    if _ok(data["cells"]):
        _bars(data, lambda c: c["total_time_ms"] / 1000, "seconds",
              "Total time of the move", os.path.join(plots, "total-time.png"))
        _bars(data, lambda c: c["wire_bytes"] / MB, "MB",
              "Bytes on the wire", os.path.join(plots, "wire-bytes.png"))
        made += ["total-time.png", "wire-bytes.png"]
    if _adaptation(data, os.path.join(plots, "adaptation.png")):
        made.append("adaptation.png")
    if _breakdown_plot(data, os.path.join(plots, "overlay-breakdown.png")):
        made.append("overlay-breakdown.png")
    text = summary(data) + "\n" + "\n".join(
        f"![{m}](plots/{m})" for m in made) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    return made


def publish(data, docs):
    """summary.md, plots/ and results.json for the repository: timelines
    are kept for the dynamic link only (the adaptation plot's data)."""
    write(data, docs)
    slim = copy.deepcopy(data)
    for c in slim["cells"]:
        if c.get("profile") != "dynamic":
            c.pop("timeline", None)
    with open(os.path.join(docs, "results.json"), "w") as f:
        json.dump(slim, f, indent=1)
