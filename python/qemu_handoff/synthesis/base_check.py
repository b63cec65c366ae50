# SPDX-License-Identifier: GPL-2.0-or-later
"""Bases verified once per service, not once per synthesis: when the
service starts (verify_all), and again before a synthesis of a base
whose files changed.

A base's files are proven against its index (and so its content ID) by
reading every byte: `qemu-handoff base verify`, what QEMU does itself on
a base's first use in a process. The service verifies each base once and
keeps, with the verdict, each file's size, mtime_ns, inode and ctime_ns:
while none changed the verdict stands (ctime is the kernel's, set on any
write or metadata change and not settable by a user: a file rewritten
with its mtime put back still shows); when one changed, the base is
verified again before its next synthesis.

QEMU cannot be told of that verdict yet: each synthesis's QEMU still
re-hashes the base when it opens it (handoff_base_store_open(), in
qemu/overlay/migration/handoff-base.c); docs/synthesis.md says what it
would take.
"""

import json
import os
import subprocess
import threading
import time

from ..paths import BUILD
from ..formats import manifest as base_manifest

TOOL = os.path.join(BUILD, "handoff", "migration-handoff", "qemu-handoff")
INDEX = "index"         # HANDOFF_BASE_INDEX: the engine's chunk index


class BaseCheckFailed(Exception):
    """The base's files are not what its index says (or could not be
    read): the operator's detail."""


def signature(base_dir):
    """What identifies the base's files as they are now: (path, size,
    mtime_ns, inode, ctime_ns) of its manifest, index and regions."""
    manifest = base_manifest.read(base_dir)
    paths = [os.path.join(base_dir, base_manifest.FILE),
             os.path.join(base_dir, INDEX), manifest.disk.path,
             *(region.path for region in manifest.memory)]
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((path, st.st_size, st.st_mtime_ns, st.st_ino,
                    st.st_ctime_ns))
    return tuple(out)


class VerifiedBases:
    """The service's verdicts on its bases, by real path."""

    def __init__(self, log, tool=TOOL):
        self.log = log
        self.tool = tool if os.access(tool, os.X_OK) else None
        if not self.tool:
            log(f"no {tool}: bases are not verified by the service, only "
                f"by each VM's QEMU")
        self._verified = {}         # real path -> (base ID, signature)
        self._locks = {}
        self._lock = threading.Lock()

    def check(self, base_dir, base_id):
        """Verifies the base at @base_dir (content ID @base_id) unless it
        was verified and has not changed since; raises BaseCheckFailed.
        True if the verdict is the service's (QEMU may be told so: -handoff
        verified-id), False if there is no tool to verify with."""
        if not self.tool:
            return False
        path = os.path.realpath(base_dir)
        with self._lock:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:              # one verification of a base at a time
            try:
                before = signature(path)
            except (OSError, base_manifest.ManifestError) as e:
                raise BaseCheckFailed(f"{path}: {e}") from None
            if self._verified.get(path) == (base_id, before):
                return True
            self._verify(path, base_id)
            # Kept only if nothing changed while it was read; a base that
            # changed meanwhile is left to QEMU's own check this time.
            if signature(path) != before:
                return False
            self._verified[path] = (base_id, before)
            return True

    def verify_all(self, bases):
        """Verifies @bases (content ID -> directory) from a thread of its
        own, started now: a cloudlet's first synthesis of a base should
        not wait for its seconds of hashing. A synthesis that comes
        meanwhile waits for the same verification (check()'s lock);
        a base that fails is logged here and refused when asked for."""
        def run():
            try:
                for base_id, base_dir in sorted(bases.items()):
                    try:
                        self.check(base_dir, base_id)
                    except Exception as e:  # noqa: B902 - logged, the next
                        self.log(f"base {base_id}: {e}")
            finally:
                self.log("bases verified at start")

        if self.tool:
            threading.Thread(target=run, daemon=True).start()

    def _verify(self, path, base_id):
        start = time.monotonic()
        run = subprocess.run([self.tool, "base", "verify", "--json",
                              os.path.join(path, INDEX)],
                             capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
        try:
            result = json.loads(run.stdout)
        except ValueError:
            result = {}
        if run.returncode or not result.get("ok") or \
                result.get("id") != base_id:
            self._verified.pop(path, None)
            raise BaseCheckFailed(
                f"base {path} failed its verification: "
                f"{result.get('error') or run.stderr.strip() or run.stdout}")
        self.log(f"base {base_id} ({path}) verified: {result['bytes']} "
                 f"bytes in {time.monotonic() - start:.3f} s")
