# SPDX-License-Identifier: GPL-2.0-or-later
"""Reads the virtual disk: the overlay over its base, as the guest sees it.

Directly: each range is read from the file qemu-img map names for it (the
qcow2 file at the cluster's offset, or the raw base), so only the bytes
asked for are read: a filesystem's metadata, not the whole disk. Ranges
stored where map gives no offset (compressed or encrypted clusters, a
layer reached over the network) cannot be read that way; the disk is then
copied once to a raw file (qemu-img convert, sparse) and read from there.
"""

import bisect
import os
import subprocess
import tempfile

from . import BreakdownError


class DirectReader:
    """Reads through qemu-img map's offsets. Raises NeedsCopy at creation
    when some data range cannot be read directly."""

    class NeedsCopy(Exception):
        pass

    def __init__(self, disk_map):
        self.size = disk_map.virtual_size
        self.extents = sorted(disk_map.extents, key=lambda e: e["start"])
        self.starts = [e["start"] for e in self.extents]
        self.files = {}
        try:
            self._open_layers(disk_map)
        except BaseException:
            self.close()
            raise
        self.method = "direct"

    def _open_layers(self, disk_map):
        for e in self.extents:
            if not e["data"]:
                continue  # reads as zeros (or past the backing file's end)
            if "offset" not in e:
                raise self.NeedsCopy(
                    f"range at {e['start']} (depth {e['depth']}) has no "
                    "file offset (compressed or encrypted)")
            d = e["depth"]
            if d not in self.files:
                if d >= len(disk_map.layers):
                    raise self.NeedsCopy(f"no layer at depth {d}")
                layer = disk_map.layers[d]
                path = layer.storage()
                if layer.encrypted or not path or not os.path.exists(path):
                    raise self.NeedsCopy(f"layer {d} ({path}) is not a local"
                                         " unencrypted file")
                try:
                    self.files[d] = os.open(path, os.O_RDONLY)
                except OSError as err:
                    raise BreakdownError(f"cannot read {path}: {err}")

    def read(self, offset, length):
        out = bytearray(length)
        pos, end = offset, offset + length
        i = bisect.bisect_right(self.starts, pos) - 1
        while pos < end:
            if i < 0 or i >= len(self.extents):
                break  # beyond the map: reads as zeros
            e = self.extents[i]
            e_end = e["start"] + e["length"]
            if e_end <= pos:
                i += 1
                continue
            stop = min(end, e_end)
            if e["data"]:
                n = stop - pos
                src = e["offset"] + (pos - e["start"])
                chunk = os.pread(self.files[e["depth"]], n, src)
                out[pos - offset:pos - offset + len(chunk)] = chunk
            pos = stop
            i += 1
        return bytes(out)

    def close(self):
        for fd in self.files.values():
            os.close(fd)
        self.files = {}


class CopyReader:
    """Reads a raw copy of the whole disk made with qemu-img convert."""

    def __init__(self, disk_map, tmpdir=None, force_share=False,
                 progress=None):
        self.size = disk_map.virtual_size
        self.dir = tempfile.mkdtemp(prefix="vm-breakdown.", dir=tmpdir)
        self.path = os.path.join(self.dir, "disk.raw")
        self.fd = None
        if progress:
            progress(f"copying the disk to a raw file in {self.dir} "
                     f"({self.size / 2**20:.0f} MiB virtual, sparse)")
        cmd = [disk_map.qemu_img, "convert", "-O", "raw"]
        if force_share:
            cmd.append("-U")
        cmd += [disk_map.path, self.path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise BreakdownError("qemu-img convert failed: "
                                     + proc.stderr.strip())
            self.fd = os.open(self.path, os.O_RDONLY)
        except BaseException:
            self.close()
            raise
        self.method = "raw copy"

    def read(self, offset, length):
        data = os.pread(self.fd, length, offset)
        if len(data) < length:
            data += bytes(length - len(data))
        return data

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if os.path.exists(self.path):
            os.unlink(self.path)
        if os.path.isdir(self.dir):
            os.rmdir(self.dir)


def open_disk(disk_map, copy=False, tmpdir=None, force_share=False,
              progress=None):
    """A reader of the virtual disk (close() it). @copy forces the raw copy."""
    if not copy:
        try:
            return DirectReader(disk_map)
        except DirectReader.NeedsCopy as why:
            if progress:
                progress(f"cannot read the layers directly ({why})")
    return CopyReader(disk_map, tmpdir, force_share, progress)
