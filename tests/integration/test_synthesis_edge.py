# SPDX-License-Identifier: GPL-2.0-or-later
"""Synthesis of a real application VM: the OCR edge guest (tesseract, its
model loaded in a service that stays warm) saved as an overlay, synthesized
by the service, and asked to read a page through the forwarded port.

The prepared VM (qemu_handoff.workloads: the edge base plus the `ocr`
application installed with apt-get into its overlay) is shared with the
benchmarks and made once per edge guest build (minutes under TCG).
"""

import json
import os
import subprocess
import sys
import time

from qemu_handoff.guest import free_tcp_port
from qemu_handoff.paths import BUILD, TOP
from qemu_handoff.workloads import make_workload

from qemu_handoff.synthesis.client import ask

SYNTHESIS = os.path.join(TOP, "scripts", "handoff-synthesis.py")
OCR_PORT = 8002
OCR_REQUEST = "/usr/share/handoff-edge/ocr.png"


def wait_serving(log_path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while "serving" not in open(log_path).read():
        assert proc.poll() is None, open(log_path).read()
        assert time.monotonic() < deadline, "the service does not listen"
        time.sleep(0.1)


def test_ocr_vm_synthesized_answers_through_forwarded_port(tmp_path):
    app = make_workload("ocr", os.path.join(BUILD, "bench", "cache"))
    app.prepare()
    src = app.start_source(str(tmp_path))         # its service answered
    try:
        src.qmp.cmd("stop")
        overlay = str(tmp_path / "ocr.overlay")
        # zstd-3: quicker to save than the default lzma-6, for a test.
        src.qmp.cmd("handoff-overlay-save", path=overlay,
                    base=app.base_dir, compression="zstd-3")
        assert src.wait_migration(timeout=1200)["status"] == "completed"
    finally:
        src.stop()

    bases = tmp_path / "bases"
    bases.mkdir()
    os.symlink(app.base_dir, bases / "edge")
    port = free_tcp_port()
    log = open(tmp_path / "service.log", "w")
    service = subprocess.Popen(
        [sys.executable, SYNTHESIS, "serve", "--bases", str(bases),
         "--listen", f"127.0.0.1:{port}", "--workdir",
         str(tmp_path / "vms"), "--insecure", "--stop-vms-on-exit"],
         stdout=log,
        stderr=subprocess.STDOUT)
    try:
        wait_serving(log.name, service)
        run = subprocess.run(
            [sys.executable, SYNTHESIS, "synthesize", f"127.0.0.1:{port}",
             overlay, "--forward", str(OCR_PORT), "--json", "--insecure"],
            capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, run.stderr + open(log.name).read()
        result = json.loads(run.stdout)
        answer = ask("127.0.0.1", result["ports"][str(OCR_PORT)],
                     OCR_REQUEST)
        want = {k: v for k, v in app.reply.items() if k != "ms"}
        assert {k: v for k, v in answer.items() if k != "ms"} == want
        assert want["words"] > 100, want
    finally:
        service.terminate()
        service.wait(timeout=60)
        log.close()
