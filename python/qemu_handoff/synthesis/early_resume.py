# SPDX-License-Identifier: GPL-2.0-or-later
"""Early-start syntheses whose client left before every segment was in
(docs/synthesis.md, "Early start"): each waits, its VM running on what
it has, for the same client to come back ({"op": "resume", "name": VM})
within serve --reconnect-timeout; one it never comes back to is removed,
and its cause kept for TOMBSTONE_S, so that a late client hears why.

Keyed by owner and VM name: only the client that started a synthesis
(the same certificate name, or address on loopback) resumes it, and
another client's VM is answered as one that does not exist.
"""

import threading
import time

TOMBSTONE_S = 600


class Orphans:
    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = {}
        self._buried = {}

    def wait(self, owner, name, synthesis):
        with self._lock:
            self._waiting[(owner, name)] = synthesis

    def take(self, owner, name, sock, released):
        """The synthesis @owner's VM @name waits in, handed @sock (and
        @released, set when @sock is no longer its) under the lock, so
        that it cannot give up meanwhile; None if there is none."""
        with self._lock:
            synthesis = self._waiting.pop((owner, name), None)
            if synthesis is not None:
                synthesis.adopt(sock, released)
            return synthesis

    def drop(self, owner, name, synthesis, cause):
        """True if @synthesis was still waiting: it gives up now, @cause
        kept for a late client; False if a client took it meanwhile (it
        is coming back)."""
        with self._lock:
            if self._waiting.get((owner, name)) is not synthesis:
                return False
            del self._waiting[(owner, name)]
            now = time.monotonic()
            self._buried = {k: v for k, v in self._buried.items()
                            if v[1] > now}
            self._buried[(owner, name)] = (cause, now + TOMBSTONE_S)
            return True

    def cause(self, owner, name):
        """Why @owner's VM @name was removed, if it was lately."""
        with self._lock:
            cause, until = self._buried.get((owner, name), (None, 0))
            return cause if until > time.monotonic() else None
