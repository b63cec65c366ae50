# SPDX-License-Identifier: GPL-2.0-or-later
"""What TLS costs a handoff on loopback: the same VM (test guest after a
workload) handed off to a destination on 127.0.0.1, plaintext and over
tls-creds-x509, with fixed modes so that the stream is the same size.
Prints seconds, stream bytes and stream MB/s per cell; every move is
verified (RAM, disk, execution). The WAN cost is measured by
`scripts/bench.py --systems handoff handoff-tls`.

  scripts/bench-tls.py [--modes none zstd-1] [--repeat 2]
"""

import argparse
import os
import shutil
import tempfile
import time

from ..bases import start_destination
from ..identity import assert_same_vm
from ..scenario import TLS_HOST, tls_arguments
from ..workloads import TestWorkload


def one_move(work, workload, mode, tls):
    os.makedirs(work)
    args = tls_arguments(work) if tls else ((), ())
    src = workload.start_source(work, extra_args=args[0])
    dst = start_destination("dst", work, workload.base_dir,
                            extra_args=args[1])
    try:
        if tls:
            dst.qmp.cmd("migrate-set-parameters", tls_creds="tls0")
            src.qmp.cmd("migrate-set-parameters", tls_creds="tls0",
                        tls_hostname=TLS_HOST)
        t0 = time.monotonic()
        src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}",
                    base=workload.base_dir, compression=mode)
        info = src.wait_migration()
        seconds = time.monotonic() - t0
        assert info["status"] == "completed", info.get("error-desc")
        assert_same_vm(src, dst)
        out = info["handoff"]["output-bytes"]
        return seconds, out
    finally:
        src.stop()
        dst.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["none", "zstd-1"])
    ap.add_argument("--workload", default="mixed")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="qemu-handoff-tls-")
    try:
        workload = TestWorkload(work, args.workload).prepare()
        print(f"  {'mode':<8}{'tls':<5}{'run':>4}{'seconds':>9}"
              f"{'stream MB':>11}{'MB/s':>8}")
        n = 0
        for mode in args.modes:
            for tls in (False, True):
                for r in range(args.repeat):
                    n += 1
                    s, out = one_move(os.path.join(work, f"m{n}"), workload,
                                      mode, tls)
                    print(f"  {mode:<8}{'on' if tls else 'off':<5}{r + 1:>4}"
                          f"{s:>9.2f}{out / 1e6:>11.1f}{out / 1e6 / s:>8.1f}",
                          flush=True)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
