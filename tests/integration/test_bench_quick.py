# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmark harness works end to end (scripts/bench.py --quick): the
CI-size guest moved once by handoff and once by stock migration over an
emulated 25 Mbit/s link, both verified, the overlay breakdown encoded, the
summary and plots written. A smoke test: no figure is asserted beyond
what makes the outputs meaningful."""

import json
import os
import subprocess

from qemu_handoff.paths import TOP


def test_quick_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run(["/usr/bin/python3", os.path.join(TOP, "scripts",
                                                         "bench.py"),
                        "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    with open(out / "results.json") as f:
        data = json.load(f)
    cells = {c["method"]: c for c in data["cells"]}
    assert set(cells) == {"handoff", "stock"}
    for c in cells.values():
        assert c["status"] == "completed" and c["verified"], c
        assert c["wire_bytes"] > 0 and c["total_time_ms"] > 0
        assert c["timeline"] and c["timeline"][-1]["status"] == "completed"
    h = cells["handoff"]["handoff"]
    assert h["output-bytes"] <= cells["handoff"]["wire_bytes"]
    assert h["zero"] + h["base-ref"] + h["self-ref"] + h["data"] > 0

    steps = data["breakdown"]["test"]["steps"]
    assert [s["step"] for s in steps][:2] == ["compressed", "+ dedup"]
    # Without dedup nothing is a reference; with it, fewer bytes remain.
    assert steps[0]["stats"]["base_ref_chunks"] == 0
    assert steps[1]["bytes"] < steps[0]["bytes"]

    summary = (out / "summary.md").read_text()
    assert "| test | 25 Mbit/s | stock " in summary
    for png in ("total-time.png", "wire-bytes.png", "overlay-breakdown.png"):
        path = out / "plots" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
