# SPDX-License-Identifier: GPL-2.0-or-later
"""The overlay's layers as qemu-img sees them.

`qemu-img map --output=json` lists every range of the virtual disk with the
layer it is read from (depth 0 = the overlay itself, 1 = its backing file,
...), whether it reads as zeros and, for ranges stored uncompressed, the
offset in that layer's file. Ranges at depth 0 are what the VM changed
since it left the base:

  data:true                   a data cluster: the overlay holds bytes
  data:false, zero:true       a zero cluster: the guest discarded (TRIM with
                              discard=unmap) or wrote zeros with
                              detect-zeroes; the base's bytes are hidden
"""

import json
import os
import shutil
import subprocess

from ..paths import BUILD
from . import BreakdownError
from .intervals import normalise


def find_qemu_img(explicit=None):
    """The fork's qemu-img (build/qemu/, or $QEMU_HANDOFF_BUILD/qemu/),
    else the first qemu-img on PATH."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BreakdownError(f"{explicit}: not an executable qemu-img")
        return explicit
    candidate = os.path.join(BUILD, "qemu", "qemu-img")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("qemu-img")
    if found:
        return found
    raise BreakdownError("no qemu-img: build the fork (scripts/build-qemu.sh)"
                         " or install Debian's qemu-utils")


class Layer:
    """One image of the backing chain: depth 0 is the overlay."""

    def __init__(self, depth, info):
        self.depth = depth
        self.filename = info.get("filename")
        self.format = info.get("format")
        self.virtual_size = info.get("virtual-size")
        spec = (info.get("format-specific") or {}).get("data") or {}
        # With an external data file, map offsets point into it.
        self.data_file = spec.get("data-file")
        self.encrypted = bool(info.get("encrypted"))

    def storage(self):
        """The file that map offsets of this layer point into."""
        if self.data_file:
            path = self.data_file
            if not os.path.isabs(path) and self.filename:
                path = os.path.join(os.path.dirname(self.filename), path)
            return path
        return self.filename


class DiskMap:
    def __init__(self, path, chain, extents, qemu_img):
        self.path = path
        self.qemu_img = qemu_img
        self.layers = [Layer(i, info) for i, info in enumerate(chain)]
        top = chain[0]
        self.format = top.get("format")
        self.virtual_size = top["virtual-size"]
        self.cluster_size = top.get("cluster-size")
        self.backing = top.get("full-backing-filename") or \
            top.get("backing-filename")
        self.backing_format = top.get("backing-filename-format")
        self.extents = extents
        self.top_data = normalise([(e["start"], e["start"] + e["length"])
                                   for e in extents
                                   if e["depth"] == 0 and e["data"]])
        self.top_zero = normalise([(e["start"], e["start"] + e["length"])
                                   for e in extents
                                   if e["depth"] == 0 and not e["data"]
                                   and e.get("zero")])


def _run(cmd, what):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise BreakdownError(f"cannot run {cmd[0]}: {e}")
    if proc.returncode != 0:
        msg = proc.stderr.strip() or f"exit status {proc.returncode}"
        if "lock" in msg:
            msg += ("\n(a running QEMU holds the image: stop the VM, or pass"
                    " --force-share to read it anyway, knowing that it"
                    " may change while it is read)")
        raise BreakdownError(f"{what}: {msg}")
    return proc.stdout


def read_disk_map(path, qemu_img, force_share=False):
    """Checks that @path is a qcow2 overlay with a backing file and returns
    its DiskMap."""
    if not os.path.exists(path):
        raise BreakdownError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise BreakdownError(f"{path}: not readable (permission denied)")
    share = ["-U"] if force_share else []
    out = _run([qemu_img, "info", "--output=json", *share, path],
               f"qemu-img info {path}")
    info = json.loads(out)
    if info.get("format") != "qcow2":
        raise BreakdownError(
            f"{path} is a {info.get('format')} image, not a qcow2 overlay "
            "(the input is the VM's qcow2 overlay on its base disk)")
    if not info.get("backing-filename"):
        raise BreakdownError(
            f"{path} has no backing file: it is not an overlay on a base "
            "disk, so nothing in it can be told apart from the base")
    out = _run([qemu_img, "info", "--output=json", "--backing-chain",
                *share, path], f"qemu-img info --backing-chain {path}")
    chain = json.loads(out)
    out = _run([qemu_img, "map", "--output=json", *share, "-f", "qcow2",
                path], f"qemu-img map {path}")
    extents = json.loads(out)
    return DiskMap(path, chain, extents, qemu_img)
