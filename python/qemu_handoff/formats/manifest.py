# SPDX-License-Identifier: GPL-2.0-or-later
"""A base's manifest, base.json: the one Python reader.

QEMU writes it (handoff-base-create) and parses it
(qemu/overlay/migration/handoff-manifest.c); this reader keeps the C
parser's rules, so that a base the tools accept is one QEMU accepts:
format "qemu-handoff-base/1", a disk and memory regions each naming a file
by a relative path inside the base directory (no "." or ".." component).
The directory is a file on disk someone else may have written: every
failure is a ManifestError naming it, never a KeyError.
"""

import json
import os

FILE = "base.json"
FORMAT = "qemu-handoff-base/1"


class ManifestError(ValueError):
    """base.json is missing, unreadable or not a base's manifest."""


class Region:
    """A RAM block or the disk: its name, size and file (an absolute path
    inside the base directory)."""

    def __init__(self, name, size, path):
        self.name, self.size, self.path = name, size, path


class Manifest:
    """A base directory's manifest: id (the base's identity, what
    destinations match), memory (Regions in QEMU's order), disk (a
    Region named "disk")."""

    def __init__(self, directory, base_id, memory, disk):
        self.dir, self.id, self.memory, self.disk = (directory, base_id,
                                                     memory, disk)

    def ram(self, name="pc.ram"):
        for region in self.memory:
            if region.name == name:
                return region
        raise ManifestError(f"{self.dir}: its base has no {name} region")


def _file(directory, rel):
    if (not isinstance(rel, str) or not rel or os.path.isabs(rel) or
            any(part in ("", ".", "..") for part in rel.split("/"))):
        raise ManifestError(f"{directory}: manifest names file {rel!r}: "
                            "not a relative path inside the base")
    return os.path.join(directory, rel)


def _region(directory, entry, name=None):
    if not isinstance(entry, dict):
        raise ManifestError(f"{directory}: not a {FORMAT} manifest")
    name = entry.get("name") if name is None else name
    size = entry.get("size")
    if (not isinstance(name, str) or not isinstance(size, int) or
            isinstance(size, bool) or size < 0):
        raise ManifestError(f"{directory}: not a {FORMAT} manifest")
    return Region(name, size, _file(directory, entry.get("file")))


def read(directory):
    """The manifest of base directory @directory."""
    try:
        with open(os.path.join(directory, FILE)) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ManifestError(f"{directory}: not a base directory ({e})")
    if (not isinstance(doc, dict) or doc.get("format") != FORMAT or
            not isinstance(doc.get("id"), str) or
            not isinstance(doc.get("memory"), list)):
        raise ManifestError(f"{directory}: not a {FORMAT} manifest")
    memory = [_region(directory, m) for m in doc["memory"]]
    disk = _region(directory, doc.get("disk"), name="disk")
    return Manifest(directory, doc["id"], memory, disk)
