# SPDX-License-Identifier: GPL-2.0-or-later
"""Early-start syntheses whose client left before every segment was in
(docs/synthesis.md, "Early start"): each waits, its VM running on what
it has, for the same client to come back ({"op": "resume", "name": VM})
within serve --reconnect-timeout; one it never comes back to is removed,
and its cause kept for TOMBSTONE_S, so that a late client hears why.

Keyed by owner and VM name: only the client that started a synthesis
(the same certificate name, or address on loopback) resumes it, and
another client's VM is answered as one that does not exist.

A client may come back before the service noticed it left: its old
connection half-open (a link cut without a reset, a laptop asleep), the
service still reading it until the idle bound. Its resume cuts that
connection, and the synthesis, which then sees its client gone, takes
the new one at once.
"""

import threading
import time

TOMBSTONE_S = 600
TAKE_OVER_S = 10        # for a synthesis whose connection was cut to wait


class Orphans:
    def __init__(self):
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting = {}
        self._open = {}             # syntheses whose relay runs
        self._buried = {}

    def opened(self, owner, name, synthesis):
        """@synthesis's relay runs: a resume may cut its connection."""
        with self._lock:
            self._open[(owner, name)] = synthesis

    def closed(self, owner, name):
        """Before its relay stops: no resume cuts the connection after."""
        with self._lock:
            self._open.pop((owner, name), None)

    def completing(self, owner, name):
        """Whether @owner's VM @name has every segment in and ends on the
        connection it has (a resume finds nothing to take over then)."""
        with self._lock:
            synthesis = self._open.get((owner, name))
            return synthesis is not None and synthesis.all_in()

    def wait(self, owner, name, synthesis):
        with self._lock:
            self._waiting[(owner, name)] = synthesis
            self._changed.notify_all()

    def take(self, owner, name, sock, released):
        """The synthesis @owner's VM @name waits in, handed @sock (and
        @released, set when @sock is no longer its) under the lock, so
        that it cannot give up meanwhile; None if there is none. One
        still on a connection it holds open has that connection cut, and
        is waited for TAKE_OVER_S at most."""
        key = (owner, name)
        with self._lock:
            synthesis = self._waiting.pop(key, None)
            if synthesis is None and key in self._open:
                # Under the lock: closed() cannot pass meanwhile, so the
                # socket is still the relay's.
                if self._open[key].cut_client():
                    self._changed.wait_for(lambda: key in self._waiting,
                                           TAKE_OVER_S)
                    synthesis = self._waiting.pop(key, None)
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
