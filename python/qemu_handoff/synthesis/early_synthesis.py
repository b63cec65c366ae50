# SPDX-License-Identifier: GPL-2.0-or-later
"""A synthesis with early start (docs/synthesis.md, "Early start";
docs/design/early-start.md §4): the VM runs once everything before the
overlay's segments is in, while the client still sends them.

The spool is the overlay file itself: header, description and migration
stream (table part, device state) as they arrive, at the file's full
size, then the segments written in place as the relay receives them.
QEMU launches from it with -handoff ...,overlay=SPOOL,early-start=on,
feed-fd=N, reads its layout off the authenticated table, asks for what
something waits for, and checks every segment before it places a byte of
it, and the whole file's digest once it is whole.
"""

import os
import socket
import threading
import time

from ..formats import early_feed
from . import early_protocol
from .early_relay import SegmentRelay, write_all
from .launcher import LaunchedVM, LaunchError
from .registry import LOADING, VMRecord, remove_entry
from .service import CHUNK, LOAD_TIMEOUT_S, ClientClock, Refused

POLL_S = 0.1                # how often QEMU is asked how far it is
MAX_RESUMES = 8             # a client that leaves more often is let go


class EarlyStart:
    """The part of @synthesis (service.Synthesis) after the overlay's
    description: @head is its header and description as received."""

    def __init__(self, synthesis, head, header, description, base_dir,
                 early):
        self.s = synthesis
        self.head = head
        self.header = header
        self.description = description
        self.base_dir = base_dir
        self.start, self.size = early.segments(header)
        self.relay = None
        self.layout = None
        self._back = None               # (socket, released) of a resume
        self._back_event = threading.Event()
        self._released = None           # the resumed connection's
        self.resumes = 0
        self.in_when_running = None     # segments in when the VM ran

    def run(self):
        s = self.s
        server = s.server
        name = server.vm_name(s.request["name"])
        s.workdir = os.path.join(server.workdir, name)
        os.makedirs(s.workdir)
        spool = os.path.join(s.workdir, "overlay.spool")
        # Made and kept open before QEMU runs: the directory becomes its
        # uid's, which could put a link in the spool's place later.
        fd = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_EXCL |
                     os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            self._receive_prefix(fd)
            result = self._launch_and_relay(name, spool, fd)
        finally:
            os.close(fd)
        s.vm.release_monitor()
        remove_entry(s.workdir, os.path.basename(spool))
        return result

    def _receive_prefix(self, fd):
        """Everything before the segments, then the file at full size."""
        s = self.s
        write_all(fd, self.head, 0)
        at = len(self.head)
        while at < self.start:
            data = s.clock.recv(s.sock, min(CHUNK, self.start - at))
            if not data:
                raise Refused("overlay truncated before its segments")
            write_all(fd, data, at)
            at += len(data)
        os.ftruncate(fd, self.size)
        s.t["prefix"] = time.monotonic()

    def _launch(self, name, spool, feed):
        s = self.s
        server = s.server
        s.t["launch"] = time.monotonic()
        # Known before it starts: a failed start is stopped (its fds,
        # log, relays, cgroup) by the synthesis's abandon().
        s.vm = LaunchedVM(name, s.workdir, self.description, self.base_dir,
                          qemu=server.qemu, forwards=s.request["forward"],
                          address=server.forward_address,
                          extra_args=server.qemu_args,
                          limits=server.limits, verified_id=s.verified_id,
                          uids=server.uids, cgroup=server.cgroup,
                          overlay=spool, early_feed=feed.fileno())
        s.vm.start()
        s.record = VMRecord.of(s.owner, s.vm, LOADING,
                               server.forward_address)
        s.record.save()
        s.t["ready"] = time.monotonic()

    def _layout(self, ours, deadline):
        """QEMU's layout, once it has the table part; checked."""
        ours.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            return early_feed.read_layout(ours, self.start, self.size)
        except (early_feed.FeedError, OSError) as e:
            if self.s.vm.proc.poll() is not None:
                raise LaunchError(f"QEMU refused the stream: "
                                  f"{self.s.vm.failure()}") from None
            raise LaunchError(f"QEMU's segment feed: {e}") from None
        finally:
            ours.settimeout(None)

    def _launch_and_relay(self, name, spool, fd):
        s = self.s
        deadline = s.clock.end + LOAD_TIMEOUT_S
        ours, theirs = socket.socketpair()
        try:
            # The client's EAGER frames are spooled while QEMU launches.
            self.relay = SegmentRelay(s.sock, s.clock, ours, fd,
                                      area=(self.start, self.size)).start()
            try:
                try:
                    self._launch(name, spool, theirs)
                finally:
                    theirs.close()      # QEMU holds it now
                self.layout = self._layout(ours, deadline)
                # QEMU told nothing of a client that broke the protocol.
                self._refuse_if_broken()
                if self.relay.gone:
                    # No note named its VM: it could not come back.
                    raise Refused("the client left while its VM launched")
                # Its name first: what the client needs to come back.
                self.relay.set_layout(self.layout, early_feed.pack_layout(
                    self.layout) + early_protocol.note(
                        {"ok": True, "vm": name, "state": "loading",
                         "complete": False}))
                s.server.orphans.opened(s.owner, name, self)
                result = self._run_early(deadline)
            finally:
                s.server.orphans.closed(s.owner, name)
                # Before the caller answers on the client's socket: in
                # notes if the layout went out on it.
                self.relay.stop()
                s.framed = self.relay.framed
            # The pump ended: a frame it read after the last segment
            # (in the same read) may have broken the protocol.
            self._refuse_if_broken()
            return result
        finally:
            # Wakes the relay's reader of QEMU's feed, if any is left.
            try:
                ours.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ours.close()

    def _ask_qemu(self, ask, deadline, late):
        """@ask(stop) (calls into QEMU's monitor that end once @stop is
        set) from a thread of its own while this one watches the relay:
        QEMU's main loop may wait for a segment (a device's post_load, or
        cont, touching RAM a segment carries) for as long as the client
        is away, and the relay's news (the client left, came back, broke
        the protocol) must not wait for QEMU. LaunchError(@late) past
        @deadline; what @ask raised, raised here."""
        done, stop, box = threading.Event(), threading.Event(), {}

        def run():
            try:
                box["value"] = ask(stop)
            except Exception as e:      # noqa: B902 - raised by the caller
                box["error"] = e
            finally:
                done.set()

        # A client that broke the protocol does not get its VM run; one
        # that left is waited for in the loop, while @ask goes on.
        self._refuse_if_broken()
        asker = threading.Thread(target=run, daemon=True)
        asker.start()
        try:
            while not done.wait(POLL_S):
                self._check_relay()
                if time.monotonic() > deadline:
                    raise LaunchError(late)
            # Even when @ask ended at once.
            self._refuse_if_broken()
        finally:
            # Not two users of QEMU's monitor: abandon() quits through it.
            stop.set()
            asker.join(timeout=5)
            if asker.is_alive():
                # Still waiting on QEMU (a cont held by a missing page):
                # the monitor is cut from under it, and taken from the VM,
                # so that abandon() ends QEMU by signal, not through a
                # monitor another thread reads.
                qmp, self.s.vm.qmp = self.s.vm.qmp, None
                if qmp:
                    qmp.cut()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _wait_loaded(self, deadline):
        """Until QEMU loaded the device state."""
        vm = self.s.vm

        def loaded(stop):
            while not stop.is_set() and not vm.loaded():
                time.sleep(POLL_S / 5)

        self._ask_qemu(loaded, deadline, "the device state did not load "
                       "in the time allowed")

    def _run_early(self, deadline):
        s = self.s
        self._wait_loaded(deadline)
        s.t["loaded"] = time.monotonic()
        early = s.request["early-start"] and not s.server.paused
        if early:
            self._run_vm(deadline)
            self.in_when_running = self.relay.n_received
            s.server.log(f"synthesis of {s.vm.name}: running, "
                         f"{self.relay.n_received} of {self.relay.count} "
                         f"segments in")
        self.relay.note(self._result(complete=False))
        info = self._wait_applied(deadline)
        s.t["complete"] = time.monotonic()
        if not early and not s.server.paused:
            self._run_vm(deadline)
        if s.server.paused:
            s.record.state = "paused"
            s.record.save()
        if "running" not in s.t:
            s.t["running"] = s.t["complete"]
        result = self._result(complete=True)
        # .get: a QEMU given with --qemu may predate a field.
        result["early-start"] = {
            k: info.get(k) for k in ("segments", "demanded", "faults",
                                     "disk-demands", "feed-wanted",
                                     "fault-wait-ms", "fault-wait-max-ms")}
        result["early-start"].update({
            "eager-segments": self.layout.whole_in(self.relay.eager_bytes),
            "in-when-running": self.in_when_running})
        return result

    def _run_vm(self, deadline):
        s = self.s
        # Waited for as long as the deadline allows, not the monitor's
        # usual timeout: a late answer left unread would be taken as the
        # next command's.
        self._ask_qemu(lambda stop: s.vm.run(
            timeout=max(1.0, deadline - time.monotonic())), deadline,
            "the VM did not start in the time allowed")
        s.t["running"] = time.monotonic()
        s.record.state = "running"
        s.record.save()

    def _wait_applied(self, deadline):
        """QEMU's early start, completed: every segment in and applied,
        the file's digest checked. LaunchError if QEMU ended first (a
        segment that failed its check: QEMU names it in its log), the
        relay's error if the client's side failed."""
        s = self.s
        # Not QEMU's monitor while segments are missing: a guest access
        # to one may hold QEMU's main loop until it comes (see
        # _wait_loaded). QEMU closes its feed once every segment is in.
        while not self.relay.feed_closed.wait(POLL_S):
            if s.vm.proc.poll() is not None:
                break
            self._check_relay()
            if time.monotonic() > deadline:
                raise LaunchError(f"{self.relay.n_received} of "
                                  f"{self.relay.count} segments in, in "
                                  f"the time allowed")
        while True:
            if s.vm.proc.poll() is not None:
                raise LaunchError(f"QEMU refused the stream: "
                                  f"{s.vm.failure()}")
            # Every segment in, but the client may have broken the
            # protocol after them (an EAGER frame past the area): it is
            # refused, as it would have been a moment earlier.
            if self.relay.feed_error or self.relay.error:
                self._check_relay()
            info = s.vm.qmp.cmd("query-handoff-early-start")
            if info["status"] == "completed":
                return info
            if time.monotonic() > deadline:
                raise LaunchError(f"{info['segments-applied']} of "
                                  f"{info['segments']} segments applied "
                                  f"in the time allowed")
            time.sleep(POLL_S)

    def _refuse_if_broken(self):
        """Refused if the client broke the protocol (the relay's error)."""
        if self.relay.error:
            raise Refused(self.relay.error)

    def _check_relay(self):
        """The relay's failure, the client's (Refused) or QEMU's; a client
        gone before every segment is in is waited for."""
        self._refuse_if_broken()
        if self.relay.feed_error:
            raise LaunchError(f"QEMU's segment feed: "
                              f"{self.relay.feed_error}")
        if self.relay.gone and not self.relay.all_in.is_set():
            self._wait_for_client()

    def all_in(self):
        return self.relay.all_in.is_set()

    def cut_client(self):
        """For a resume (early_resume.py): the connection the relay holds
        is cut, unless every segment is in (the synthesis needs no
        client to end then, and answers where it is). True if cut."""
        if self.relay.all_in.is_set():
            return False
        self.relay.cut("a resume replaced the client's connection")
        return True

    def adopt(self, sock, released):
        """A resume's connection (another handler's thread, which waits
        for @released): the synthesis goes on on it."""
        self._back = (sock, released)
        self._back_event.set()

    def release(self):
        """The last resumed connection's handler may end (the synthesis
        answered on it)."""
        if self._released:
            self._released.set()

    def _wait_for_client(self):
        """The client left with segments missing: its VM runs on what it
        has (an access to what is missing waits in QEMU) while the client
        has --reconnect-timeout to come back; if it does not, Refused
        with the cause, which a late client hears too."""
        s, relay = self.s, self.relay
        server = s.server
        bound = server.reconnect_timeout
        cause = relay.gone
        if not self.resumes and not relay.framed:
            # Gone before anything went out to it, its VM's name first
            # (after the check in _launch_and_relay): it could not come
            # back.
            raise Refused("the client left while its VM launched")
        if self.resumes >= MAX_RESUMES:
            raise Refused(f"{cause}, after {self.resumes} resumes: "
                          f"synthesis abandoned")
        key = (s.owner, s.vm.name)
        server.log(f"synthesis of {s.vm.name}: {cause}; waiting {bound:g} "
                   f"s for it to come back (resume)")
        server.orphans.wait(*key, self)
        deadline = time.monotonic() + bound
        gone = (f"VM {s.vm.name} removed: {cause}, not back within "
                f"{bound:g} s ({relay.n_received} of {relay.count} "
                f"segments in)")
        while not self._back_event.wait(0.2):
            ended = s.vm.proc.poll() is not None or relay.feed_error
            if (ended or time.monotonic() > deadline) and \
                    server.orphans.drop(*key, self, gone):
                if ended:
                    return          # the caller's checks name it
                raise Refused(gone)
        sock, released = self._back
        self._back, self._back_event = None, threading.Event()
        self.resumes += 1
        clock = ClientClock(server.client_timeout,
                            max(1.0, s.clock.end - time.monotonic()))
        s.sock, s.clock = sock, clock
        relay.resume(sock, clock, early_feed.pack_layout(self.layout),
                     self._result(complete=False) if "loaded" in s.t else
                     {"ok": True, "vm": s.vm.name, "state": "loading",
                      "complete": False})
        # Only now may the connection it replaces (a resume's) end: until
        # the relay holds the new one, a resume could cut the old.
        self.release()
        self._released = released
        server.log(f"synthesis of {s.vm.name}: the client is back, "
                   f"{relay.n_received} of {relay.count} segments in")

    def _result(self, complete):
        """What the client hears: as for any synthesis, with early
        start's timings (seconds from the request): prefix (all but the
        segments in), running (the VM runs), complete (every segment in
        and applied)."""
        s, t = self.s, self.s.t
        state = "paused" if s.server.paused or (
            not complete and "running" not in t) else "running"
        timings = {"prefix": round(t["prefix"] - t["start"], 3),
                   "launch": round(t["ready"] - t["launch"], 3)}
        if "running" in t:
            timings["running"] = round(t["running"] - t["start"], 3)
        if complete:
            timings["complete"] = round(t["complete"] - t["start"], 3)
            timings["total"] = timings["complete"]
        return {"ok": True, "vm": s.vm.name, "state": state,
                "address": s.server.forward_address,
                "ports": {str(g): h for g, h in s.vm.ports.items()},
                "overlay-bytes": self.header.stream_bytes,
                "complete": complete, "timings": timings}
