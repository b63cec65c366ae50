# SPDX-License-Identifier: GPL-2.0-or-later
"""VM overlay files, as the synthesis service reads them.

The layout is QEMU's (qemu/overlay/migration/handoff-overlay.h) and is
documented in docs/overlay-format.md: a 64-byte header, a JSON description
of the VM, then the handoff migration stream. tests/integration/
test_synthesis.py reads files QEMU wrote with this module, so the two
cannot drift apart unnoticed.
"""

import hashlib
import json
import os
import re
import struct

from ..paths import TOP

MAGIC = b"QHOVRLAY"
VERSION = 1
HEADER_BYTES = 64
DESCRIPTION_MAX = 1 << 20
BASE_ID = re.compile(r"[0-9a-f]{32}")    # a base's content ID
# The description's version, from its one definition (QEMU writes it).
_HEADER_FILE = os.path.join(TOP, "qemu", "overlay", "migration",
                            "handoff-overlay.h")
with open(_HEADER_FILE) as _f:
    _text = _f.read()
DESCRIPTION_VERSION = int(re.search(
    r"^#define HANDOFF_OVERLAY_DESCRIPTION_VERSION (\d+)$", _text,
    re.M).group(1))
# Early start: the description's object naming a segmented stream's
# root, and the engine stream version it names (handoff-overlay-early.c).
EARLY_START = re.search(r'^#define HANDOFF_OVERLAY_EARLY_START "([^"]+)"$',
                        _text, re.M).group(1)
SEGMENTED_STREAM = int(re.search(
    r"^#define HANDOFF_OVERLAY_SEGMENTED_STREAM (\d+)", _text,
    re.M).group(1))
ROOT = re.compile(r"[0-9a-f]{64}")      # a SHA-256, lowercase hex
EARLY_START_FIELDS = frozenset(("stream-version", "root", "order-chunks",
                                "segments-bytes"))
# magic, version, description bytes, stream bytes, SHA-256, reserved
_HEADER = struct.Struct(">8sIIQ32s8s")


class OverlayError(Exception):
    """An overlay that cannot be used, with the reason."""


class Header:
    def __init__(self, description_bytes, stream_bytes, digest):
        self.description_bytes = description_bytes
        self.stream_bytes = stream_bytes
        self.digest = digest


def parse_header(raw):
    """The header of an overlay from its first HEADER_BYTES bytes."""
    if len(raw) < HEADER_BYTES:
        raise OverlayError("overlay truncated in its header")
    magic, version, desc, stream, digest, reserved = _HEADER.unpack(
        raw[:HEADER_BYTES])
    if magic != MAGIC:
        raise OverlayError("not a VM overlay (no overlay magic)")
    if version != VERSION:
        raise OverlayError(f"overlay format version {version}, this service "
                           f"reads {VERSION}")
    if reserved != bytes(8):
        raise OverlayError("overlay header has reserved bytes set")
    if not 0 < desc <= DESCRIPTION_MAX:
        raise OverlayError(f"overlay description of {desc} bytes "
                           f"(1..{DESCRIPTION_MAX} allowed)")
    if stream == 0:
        raise OverlayError("overlay was never finished (its save failed or "
                           "is still running)")
    return Header(desc, stream, digest)


def _object(pairs):
    """A JSON object with each key once: readers disagree on which of two
    counts (QEMU's option parser took the last), so neither does."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice!r} twice in one object")
    return obj


def parse_description(raw):
    """The description (a dict) from its bytes."""
    try:
        description = json.loads(raw.decode(), object_pairs_hook=_object)
    except RecursionError:
        # 1 MiB of "[" nests deeper than Python's parser recurses.
        raise OverlayError("overlay description: nested too deeply") \
            from None
    except (UnicodeDecodeError, ValueError) as e:
        raise OverlayError(f"overlay description: {e}") from None
    if not isinstance(description, dict):
        raise OverlayError("overlay description is not a JSON object")
    version = description.get("version", 1)
    if version != DESCRIPTION_VERSION:
        raise OverlayError(
            f"overlay description version {version!r}"
            + (" (a QEMU command-line fragment)" if version == 1 else "")
            + f": this cloudlet launches version {DESCRIPTION_VERSION} "
              f"(the machine as data) only; save the VM again with this "
              f"release (handoff-overlay-save, or handoff-synthesis.py "
              f"create)")
    for group, keys in (("base", ("id",)), ("machine", ("type", "accel"))):
        values = description.get(group)
        if not isinstance(values, dict) or not all(
                isinstance(values.get(k), str) for k in keys):
            raise OverlayError(f"overlay description lacks {group}."
                               f"{'/'.join(keys)}")
    if not BASE_ID.fullmatch(description["base"]["id"]):
        raise OverlayError("overlay description's base.id is not a content "
                           "ID (32 lowercase hex digits)")
    disks = description.get("disks", [])
    if not isinstance(disks, list) or not all(_is_disk(d) for d in disks):
        raise OverlayError("overlay description's disks are not a list of "
                           "{region, bytes, base}")
    early_start(description)            # refused here when malformed
    return description


class EarlyStart:
    """An early-start overlay's stream: segmented (engine stream version
    3) with table part root @root (bytes), @order_chunks chunks ordered
    first, its segments @segments_bytes at the end of the file (None in
    overlays saved before QEMU wrote it)."""

    def __init__(self, root, order_chunks, segments_bytes=None):
        self.root = root
        self.order_chunks = order_chunks
        self.segments_bytes = segments_bytes

    def segments(self, header):
        """(where the segments begin, the file's size) in the overlay
        whose header is @header, or OverlayError: the one place that
        turns segments-bytes into file offsets."""
        if self.segments_bytes is None:
            raise OverlayError(
                "this early-start overlay does not name its segments' "
                "total (segments-bytes): save it again with this QEMU")
        if self.segments_bytes >= header.stream_bytes:
            raise OverlayError(
                f"{EARLY_START}.segments-bytes {self.segments_bytes} "
                f"leaves no room for the migration stream "
                f"({header.stream_bytes} bytes in all)")
        size = HEADER_BYTES + header.description_bytes + \
            header.stream_bytes
        return size - self.segments_bytes, size


def early_start(description):
    """The description's early-start object read (None without one), or
    OverlayError naming what is wrong with it."""
    early = description.get(EARLY_START)
    if early is None:
        return None
    if not isinstance(early, dict):
        raise OverlayError(f"overlay description: {EARLY_START} is not an "
                           f"object")
    unknown = sorted(set(early) - EARLY_START_FIELDS)
    if unknown:
        raise OverlayError(f"overlay description: {EARLY_START} has "
                           f"unknown field {unknown[0][:40]!r}")
    if early.get("stream-version") != SEGMENTED_STREAM or \
            type(early.get("stream-version")) is not int:
        raise OverlayError(f"overlay description: {EARLY_START}."
                           f"stream-version must be {SEGMENTED_STREAM}")
    root = early.get("root")
    if not isinstance(root, str) or not ROOT.fullmatch(root):
        raise OverlayError(f"overlay description: {EARLY_START}.root is "
                           f"not a SHA-256 (64 lowercase hex digits)")
    chunks = early.get("order-chunks")
    if type(chunks) is not int or chunks < 0:
        raise OverlayError(f"overlay description: {EARLY_START}."
                           f"order-chunks is not a count")
    total = early.get("segments-bytes")
    if total is not None and (type(total) is not int or total <= 0):
        raise OverlayError(f"overlay description: {EARLY_START}."
                           f"segments-bytes is not a size")
    return EarlyStart(bytes.fromhex(root), chunks, total)


def _is_disk(disk):
    return isinstance(disk, dict) and isinstance(disk.get("region"), str) \
        and type(disk.get("bytes")) is int and disk["bytes"] >= 0 and \
        isinstance(disk.get("base", False), bool)


class StreamCheck:
    """Counts and hashes a stream as it passes; verify() at its end. The
    digest covers the description (@description_raw) too: it decides the
    VM's command line."""

    def __init__(self, header, description_raw):
        self.header = header
        self.bytes = 0
        self._sum = hashlib.sha256(description_raw)

    def update(self, data):
        self.bytes += len(data)
        if self.bytes > self.header.stream_bytes:
            raise OverlayError("overlay has bytes after the stream its "
                               "header names")
        self._sum.update(data)

    def verify(self):
        if self.bytes < self.header.stream_bytes:
            raise OverlayError(f"overlay truncated: its stream has "
                               f"{self.bytes} of the "
                               f"{self.header.stream_bytes} bytes its header "
                               f"names")
        if self._sum.digest() != self.header.digest:
            raise OverlayError("overlay corrupted: the SHA-256 of its "
                               "description and stream differs from its "
                               "header's")


def read_info(path):
    """(header, description) of the overlay file at @path."""
    with open(path, "rb") as f:
        header = parse_header(f.read(HEADER_BYTES))
        description = parse_description(f.read(header.description_bytes))
    return header, description
