# SPDX-License-Identifier: GPL-2.0-or-later
"""The result as a JSON document or as a table for people."""

import json

SCHEMA = 1
MIB = 1 << 20


def document(result, memory):
    """The JSON document: the disk section from analysis.py, the memory
    section from a memory source (None until one exists)."""
    doc = {"tool": "vm-breakdown", "schema": SCHEMA,
           "image": result["image"], "disk": result["disk"],
           "memory": memory}
    for key, value in result.items():
        doc.setdefault(key, value)      # warnings, timings
    return doc


def to_json(doc):
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def _mib(n):
    return f"{n / MIB:.1f}"


def _pct(n, whole):
    return f"{100.0 * n / whole:.1f}" if whole else "-"


MEMORY_ROWS = (("free", "[free (not sent with the guest agent)]"),
               ("page_cache", "[page cache]"),
               ("anonymous", "[anonymous (process memory)]"),
               ("kernel", "[kernel (slab, page tables)]"),
               ("other", "[other (kernel text, reserved)]"),
               ("unmapped", "[beyond the agent's map]"))


def _memory_table(mem):
    if mem is None:
        return ["", "Memory: not read (--qmp SOCKET --base DIR reads it "
                "through the guest agent)"]
    whole = mem["modified_bytes"]
    lines = ["", f"Memory modified since the base: {_mib(whole)} MiB of "
             f"{_mib(mem['ram_bytes'])} MiB (page classes: "
             f"{mem['source']})", "",
             f"{'MiB':>9} {'%':>6}  {'of all RAM':>10}  what the guest keeps "
             f"in it"]
    for key, name in MEMORY_ROWS:
        n = mem["classes"][key]
        if n or key != "unmapped":
            lines.append(f"{_mib(n):>9} {_pct(n, whole):>6}  "
                         f"{_mib(mem['guest'][key]):>10}  {name}")
    lines.append(f"{'-' * 9} {'-' * 6}")
    lines.append(f"{_mib(whole):>9} {_pct(whole, whole):>6}  "
                 f"{_mib(mem['ram_bytes']):>10}  total")
    return lines


def to_table(doc, top=20):
    img, disk = doc["image"], doc["disk"]
    lines = []
    lines.append(f"{img['path']}: qcow2 overlay on {img['backing']}")
    lines.append(f"  virtual size {_mib(img['virtual_size'])} MiB, "
                 f"clusters of {img['cluster_size'] // 1024} KiB, "
                 f"partition table: {disk.get('partition_table', '-')}")
    for fs in disk.get("filesystems", []):
        where = f"partition {fs['partition']}" if fs["partition"] else \
            "the whole disk"
        if "unsupported" in fs:
            lines.append(f"  {where}: not analysed ({fs['unsupported']})")
            continue
        label = f" \"{fs['label']}\"" if fs["label"] else ""
        j = fs.get("journal") or {}
        if j.get("state") == "replayed":
            n = j["transactions"]
            jtext = (f"journal: {n} committed transaction{'s' * (n != 1)} "
                     f"replayed in memory ({j['blocks']} blocks)")
        elif j.get("state") == "clean":
            jtext = "journal: clean"
        elif fs.get("needs_recovery"):
            jtext = "journal: NOT replayed"
        else:
            jtext = "journal: -"
        lines.append(f"  {fs['type']}{label} on {where}, "
                     f"{fs['block_size'] // 1024} KiB blocks, "
                     f"{fs['inodes_in_use']} inodes in use; {jtext}")
    whole = disk["modified_bytes"]
    lines.append("")
    lines.append(f"Modified since the base: {_mib(whole)} MiB "
                 f"({_mib(disk['data_bytes'])} MiB data clusters, "
                 f"{_mib(disk['zero_bytes'])} MiB zero clusters)")
    lines.append("")
    rows = []
    dirs = disk["directories"]
    multi = any(d["filesystem"] for d in dirs)
    for d in dirs[:top]:
        name = f"{d['filesystem']}:{d['path']}" if multi else d["path"]
        rows.append((d["bytes"], name))
    if len(dirs) > top:
        rest = sum(d["bytes"] for d in dirs[top:])
        rows.append((rest, f"({len(dirs) - top} more directories)"))
    cat = disk["categories"]
    if cat["unnamed_files"]:
        rows.append((cat["unnamed_files"],
                     "[files without a name (deleted while open)]"))
    kinds = {fs["type"] for fs in disk.get("filesystems", []) if "type" in fs}
    journal = f"{kinds.pop()} journal" if len(kinds) == 1 else "journal"
    rows.append((cat["journal"], f"[{journal}]"))
    meta = ", ".join(f"{k} {_mib(v)}" for k, v in disk["metadata"].items()
                     if v)
    rows.append((cat["metadata"], "[filesystem metadata]" +
                 (f"  {meta}" if meta else "")))
    rows.append((cat["free_blocks_deleted_files"],
                 "[free blocks (deleted files)]"))
    out_detail = ", ".join(f"{o['what']} {_mib(o['bytes'])}"
                           for o in disk["outside"])
    rows.append((cat["outside_filesystems"], "[outside the filesystem]" +
                 (f"  {out_detail}" if out_detail else "")))
    if cat["unanalysed_filesystems"]:
        rows.append((cat["unanalysed_filesystems"],
                     "[filesystems not analysed]"))
    rows.append((disk["zero_bytes"], "[zero clusters (discarded)]"))

    lines.append(f"{'MiB':>9} {'%':>6}  where (directories to depth "
                 f"{disk['depth']}, largest first)")
    for n, name in rows:
        lines.append(f"{_mib(n):>9} {_pct(n, whole):>6}  {name}")
    lines.append(f"{'-' * 9} {'-' * 6}")
    lines.append(f"{_mib(whole):>9} {_pct(whole, whole):>6}  total modified")
    lines += _memory_table(doc.get("memory"))
    for w in doc.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines) + "\n"
