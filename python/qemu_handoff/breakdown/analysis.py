# SPDX-License-Identifier: GPL-2.0-or-later
"""The whole disk: the overlay's modified ranges, the partition layout and
each filesystem's owners, combined into one result (a plain dict, which
report.py prints as JSON or as a table)."""

import re
import time
from collections import defaultdict

from . import BreakdownError, ext4, ext4_owner, jbd2
from .disk_map import read_disk_map
from .disk_reader import open_disk
from .intervals import clip, subtract, total
from .partitions import has_ext_magic, read_layout

CATEGORIES = ("files", "unnamed_files", "journal", "metadata",
              "free_blocks_deleted_files", "outside_filesystems",
              "unanalysed_filesystems")


class Options:
    def __init__(self, depth=3, top=20, qemu_img=None, force_share=False,
                 copy=False, tmpdir=None, replay_journal=True, qmp=None,
                 base=None):
        self.depth = depth
        self.top = top
        self.qemu_img = qemu_img
        self.force_share = force_share
        self.copy = copy
        self.tmpdir = tmpdir
        self.replay_journal = replay_journal
        self.qmp = qmp          # the running VM's QMP socket (memory)
        self.base = base        # its base directory (memory)


def _dir_key(parts, depth):
    return "/".join(parts[:depth]) if parts[:depth] else "/"


def analyse(path, opts, progress=lambda msg: None):
    t0 = time.monotonic()
    timings = {}
    warnings = []
    progress("reading the overlay's allocation map (qemu-img map)")
    dm = read_disk_map(path, opts.qemu_img, opts.force_share)
    timings["map"] = time.monotonic() - t0
    data, zero = dm.top_data, dm.top_zero
    result = {
        "image": {"path": path, "format": dm.format,
                  "virtual_size": dm.virtual_size,
                  "cluster_size": dm.cluster_size,
                  "backing": dm.backing, "backing_format": dm.backing_format,
                  "chain_depth": len(dm.layers)},
        "disk": None,
        "warnings": warnings,
    }
    disk = {"modified_bytes": total(data) + total(zero),
            "data_bytes": total(data), "zero_bytes": total(zero),
            "depth": opts.depth}
    result["disk"] = disk
    categories = dict.fromkeys(CATEGORIES, 0)
    metadata = defaultdict(int)
    outside = []
    directories = defaultdict(int)
    files = []
    filesystems = []

    reader = open_disk(dm, copy=opts.copy, tmpdir=opts.tmpdir,
                       force_share=opts.force_share, progress=progress)
    try:
        disk["read_method"] = reader.method
        t1 = time.monotonic()
        layout = read_layout(reader, dm.virtual_size)
        warnings.extend(layout.notes)
        disk["partition_table"] = layout.scheme
        disk["partitions"] = [p.to_json() for p in layout.partitions
                              if p.name]
        covered = []
        ext_parts = [p for p in layout.partitions
                     if has_ext_magic(reader, p.start)]
        for part in layout.partitions:
            where = f"partition {part.name}" if part.name else "the disk"
            covered.append((part.start, part.start + part.size))
            fs = None
            if has_ext_magic(reader, part.start):
                try:
                    fs = ext4.Ext4(reader, part.start, part.size)
                except ext4.Unsupported as why:
                    warnings.append(f"{where}: ext superblock, but {why}")
                    mod = total(clip(data, part.start, part.start + part.size))
                    categories["unanalysed_filesystems"] += mod
                    filesystems.append({"partition": part.name,
                                        "offset": part.start,
                                        "unsupported": str(why),
                                        "data_bytes": mod})
                    continue
            if fs is None:
                mod = total(clip(data, part.start, part.start + part.size))
                if mod:
                    outside.append({"what": f"{where} ({part.type}): not "
                                    "ext2/3/4", "bytes": mod})
                continue
            fs_end = part.start + min(fs.size, part.size)
            if fs.size > part.size:
                warnings.append(f"{where}: the filesystem claims "
                                f"{fs.size} bytes, the partition has "
                                f"{part.size}")
            rest = total(clip(data, fs_end, part.start + part.size))
            if rest:
                outside.append({"what": f"{where}: beyond the end of its "
                                "filesystem", "bytes": rest})
            filesystems.append(_one_fs(fs, part, fs_end, data, opts, progress,
                                       warnings, categories, metadata,
                                       directories, files,
                                       multi=len(ext_parts) > 1))
        if not any("type" in f for f in filesystems):
            parts = ", ".join(f"{p.name} {p.type}" for p in
                              layout.partitions if p.name) or "none"
            if not any("unsupported" in f for f in filesystems):
                raise BreakdownError(
                    f"no ext2/3/4 filesystem found on {path} (partition "
                    f"table: {layout.scheme}; partitions: {parts}); the "
                    f"overlay holds {total(data) / 2**20:.1f} MiB of data "
                    f"and {total(zero) / 2**20:.1f} MiB of zero clusters")
        # Whatever no partition covers.
        gaps = subtract([(0, dm.virtual_size)], _merged(covered))
        for s, e in gaps:
            mod = total(clip(data, s, e))
            if not mod:
                continue
            if layout.scheme == "none":
                what = "beyond the end of the filesystem"
            elif s == 0:
                what = "disk start (partition table, boot loader)"
            elif e == dm.virtual_size:
                what = "disk end (backup GPT, unpartitioned)"
            else:
                what = "unpartitioned space between partitions"
            outside.append({"what": what, "bytes": mod})
        timings["filesystems"] = time.monotonic() - t1
    finally:
        reader.close()

    categories["outside_filesystems"] = sum(o["bytes"] for o in outside)
    disk["categories"] = categories
    disk["metadata"] = dict(sorted(metadata.items(), key=lambda kv: -kv[1]))
    disk["outside"] = outside
    disk["directories"] = [
        {"path": key[1], "filesystem": key[0], "bytes": n}
        for key, n in sorted(directories.items(), key=lambda kv: (-kv[1],
                                                                  kv[0]))]
    files.sort(key=lambda f: (-f["bytes"], f["path"]))
    disk["files"] = files[:opts.top] if opts.top else files
    disk["filesystems"] = filesystems
    accounted = sum(categories.values())
    if accounted != disk["data_bytes"]:
        warnings.append(f"internal: {accounted} bytes attributed for "
                        f"{disk['data_bytes']} bytes of data")
    timings["total"] = time.monotonic() - t0
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    return result


def _summarise(warnings, keep=5):
    """At most @keep warnings of one kind (same text but for numbers)."""
    kinds = defaultdict(list)
    for w in warnings:
        kinds[re.sub(r"\d+", "N", w)].append(w)
    out = []
    for same in kinds.values():
        out += same[:keep]
        if len(same) > keep:
            out.append(f"... and {len(same) - keep} more like the last")
    return out


def _merged(ranges):
    out = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def _one_fs(fs, part, fs_end, data, opts, progress, warnings, categories,
            metadata, directories, files, multi):
    where = f"partition {part.name}" if part.name else "the disk"
    info = {"partition": part.name, "offset": part.start,
            "size": fs_end - part.start, "type": fs.kind, "label": fs.label,
            "block_size": fs.block_size, "inodes": fs.inodes_count,
            "needs_recovery": fs.needs_recovery(), "journal": None}
    fs_warnings = []
    if opts.replay_journal:
        progress(f"{where}: reading the journal")
        rep = jbd2.replay(fs, fs_warnings)
        info["journal"] = rep.to_json()
        if rep.blocks:
            progress(f"{where}: replaying {rep.transactions} committed "
                     f"transaction(s) ({len(rep.blocks)} blocks) in memory")
            fs.set_patch(rep.blocks)
            try:
                fs.reload()
            except ext4.Unsupported as why:
                fs_warnings.append(f"after replaying the journal: {why}; "
                                   "reading without it")
                fs.set_patch({})
                fs.reload()
                info["journal"]["state"] = "ignored"
    elif fs.needs_recovery():
        fs_warnings.append("the journal was not replayed (--no-journal): "
                           "metadata committed since the last checkpoint "
                           "is not seen")
    modified = [(s - part.start, e - part.start)
                for s, e in clip(data, part.start, fs_end)]
    info["data_bytes"] = total(modified)
    progress(f"{where}: scanning {fs.kind} inodes ({fs.inodes_count} "
             f"inodes, {fs.group_count} groups)")
    fsb = ext4_owner.attribute(fs, modified, progress, fs_warnings)
    info["inodes_in_use"] = fsb.inodes_scanned
    tag = part.name if multi else None
    named = 0
    for ino, n in fsb.by_inode.items():
        parts = fsb.paths.get(ino)
        if parts is None:
            continue
        named += n
        key_parts = parts if ino in fsb.dirs else parts[:-1]
        directories[(tag, _dir_key(key_parts, opts.depth))] += n
        files.append({"path": "/" + "/".join(parts), "filesystem": tag,
                      "inode": ino, "bytes": n,
                      "directory": ino in fsb.dirs})
    categories["files"] += named
    categories["unnamed_files"] += fsb.unnamed
    categories["journal"] += fsb.journal
    categories["metadata"] += sum(fsb.metadata.values())
    categories["free_blocks_deleted_files"] += fsb.free
    for kind, n in fsb.metadata.items():
        metadata[kind] += n
    info["bytes"] = {"files": named, "unnamed_files": fsb.unnamed,
                     "journal": fsb.journal,
                     "metadata": sum(fsb.metadata.values()),
                     "free_blocks_deleted_files": fsb.free}
    if fsb.unnamed_inodes:
        fs_warnings.append(
            f"{len(fsb.unnamed_inodes)} inodes in use own modified blocks "
            "but have no name (deleted while open, or unreachable): "
            + ", ".join(map(str, sorted(fsb.unnamed_inodes)[:10])))
    fs_warnings = _summarise(fs_warnings)
    warnings.extend(f"{where}: {w}" for w in fs_warnings)
    info["warnings"] = fs_warnings
    return info
