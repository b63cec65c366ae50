# SPDX-License-Identifier: GPL-2.0-or-later
"""The service's early-start relay (synthesis/early_relay.py) and resume
(early_resume.py) against a client that misbehaves, over socket pairs:
no QEMU, the feed's other end read by the test as QEMU would."""

import os
import socket
import threading
import time

import pytest

from qemu_handoff.formats import early_feed
from qemu_handoff.synthesis import early_protocol
from qemu_handoff.synthesis.early_relay import SegmentRelay
from qemu_handoff.synthesis.early_resume import Orphans
from qemu_handoff.synthesis.service import ClientClock

START, LENGTH, COUNT = 4096, 1024, 3


def frame(k, fill=None):
    return early_protocol.frame_header(k, LENGTH) + \
        bytes([k + 1 if fill is None else fill]) * LENGTH


LAYOUT = early_feed.Layout(START, [START + k * LENGTH for k in range(COUNT)],
                           [LENGTH] * COUNT)


def eager(data):
    return early_protocol.eager_frame(data)


class Stand:
    """A relay between a client socket and a feed socket the test holds,
    writing into a spool file; with @launching, before QEMU gave the
    layout (set_layout)."""

    def __init__(self, tmp_path, launching=False):
        self.client, self.relay_client = socket.socketpair()
        self.qemu, relay_feed = socket.socketpair()
        self.spool = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT)
        os.ftruncate(self.spool, START + COUNT * LENGTH)
        self.relay = SegmentRelay(
            self.relay_client, ClientClock(30, 60), relay_feed, self.spool,
            None if launching else LAYOUT,
            area=(START, START + COUNT * LENGTH)).start()
        self.qemu.settimeout(5)

    def haves(self, n):
        data = b""
        while len(data) < n * early_feed.MESSAGE_BYTES:
            data += self.qemu.recv(4096)
        return [int.from_bytes(data[i + 4:i + 8], "big")
                for i in range(0, len(data), early_feed.MESSAGE_BYTES)]

    def segment(self, k):
        return os.pread(self.spool, LENGTH, START + k * LENGTH)

    def wait(self, what):
        deadline = time.monotonic() + 5
        while not what():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def close(self):
        self.relay.stop()
        for s in (self.client, self.relay_client, self.qemu):
            s.close()
        os.close(self.spool)


@pytest.fixture
def stand(tmp_path):
    s = Stand(tmp_path)
    yield s
    s.close()


@pytest.fixture
def launching(tmp_path):
    s = Stand(tmp_path, launching=True)
    yield s
    s.close()


def test_eager_bytes_before_the_layout_are_spooled_then_announced(
        launching):
    """The area's first bytes, sent while QEMU launches: in the spool at
    once, announced once the layout says which segments they make whole
    (not the one cut off); the rest then comes in frames."""
    stand = launching
    area = b"".join(bytes([k + 1]) * LENGTH for k in range(COUNT))
    half = LENGTH + LENGTH // 2
    stand.client.sendall(eager(area[:LENGTH // 2]) +
                         eager(area[LENGTH // 2:half]))
    stand.wait(lambda: stand.relay.eager_bytes == half)
    assert stand.segment(0) == area[:LENGTH]
    stand.qemu.settimeout(0.2)
    with pytest.raises(TimeoutError):
        stand.qemu.recv(4096)           # no layout yet: nothing told
    stand.qemu.settimeout(5)
    stand.relay.set_layout(LAYOUT, b"")
    assert stand.haves(1) == [0]
    # In flight when the layout came: still taken, then frames.
    stand.client.sendall(eager(area[half:2 * LENGTH]) + frame(2))
    assert stand.haves(2) == [1, 2]
    stand.wait(stand.relay.all_in.is_set)   # set after the last HAVE
    assert stand.relay.error is None
    assert [stand.segment(k) for k in range(COUNT)] == \
        [bytes([k + 1]) * LENGTH for k in range(COUNT)]


def test_a_client_answering_the_layout_at_once_hears_its_vms_name(
        launching):
    """The layout and the note naming the VM go out together: a client
    that answers the layout at once with a frame of no segment (which
    ends the pump) has heard both. Queued apart, the pump could read
    that frame and end between them (it failed so in CI, under load)."""
    stand = launching
    note = {"ok": True, "vm": "vm-1", "state": "loading"}
    layout = early_feed.pack_layout(LAYOUT)
    # From another thread, as the service does: the client answers
    # while set_layout() may still run.
    teller = threading.Thread(target=stand.relay.set_layout,
                              args=(LAYOUT,
                                    layout + early_protocol.note(note)))
    teller.start()
    stand.client.settimeout(5)
    got = b""
    while len(got) < len(layout):
        got += stand.client.recv(65536)
    stand.client.sendall(early_protocol.frame_header(COUNT, 10))
    stand.wait(lambda: stand.relay.error)
    stand.client.settimeout(0.5)
    try:
        while True:
            got += stand.client.recv(65536)
    except TimeoutError:
        pass                # the pump ended: nothing more comes
    teller.join()
    reader = early_protocol.MessageReader(COUNT)
    assert got.startswith(layout)
    assert list(reader.feed(got[len(layout):])) == [("note", note)]


@pytest.mark.parametrize("what,sent,error", [
    ("one byte past the area", eager(bytes(COUNT * LENGTH)) + eager(b"x"),
     "eager frame of 1 bytes at byte 3072"),
    ("empty", early_protocol.FRAME.pack(early_protocol.EAGER, 0),
     "eager frame of 0 bytes"),
    ("longer than a segment", early_protocol.FRAME.pack(
        early_protocol.EAGER, early_feed.SEGMENT_MAX_BYTES + 1),
     "eager frame of 65537 bytes"),
    ("a segment frame before the layout", frame(0),
     "segment frame 0 before the layout"),
])
def test_eager_frames_out_of_bounds_are_the_clients_fault(launching, what,
                                                         sent, error):
    """Only the area's next bytes, never past its end, only before any
    numbered frame; nothing else is written."""
    launching.client.sendall(sent)
    launching.wait(lambda: launching.relay.error)
    assert error in launching.relay.error, launching.relay.error


def test_eager_frame_after_a_segment_frame_is_the_clients_fault(stand):
    stand.client.sendall(frame(0) + eager(bytes([9]) * LENGTH))
    assert stand.haves(1) == [0]
    stand.wait(lambda: stand.relay.error)
    assert "eager frame of 1024 bytes at byte 0" in stand.relay.error
    assert stand.segment(1) == bytes(LENGTH)


def test_a_segment_sent_again_is_taken_once(stand):
    """The second copy of a segment (a client's resend, or a different
    body for it) neither rewrites the spool nor tells QEMU twice."""
    stand.client.sendall(frame(0) + frame(0, fill=0xee) + frame(1))
    assert stand.haves(2) == [0, 1]
    assert stand.segment(0) == bytes([1]) * LENGTH
    assert stand.relay.n_received == 2 and stand.relay.error is None


def test_client_cut_inside_a_frame_is_gone_not_half_written(stand):
    """A client that leaves half-way through a frame: gone (it may come
    back), the half segment neither written nor announced."""
    stand.client.sendall(frame(0) + frame(1)[:LENGTH // 2])
    assert stand.haves(1) == [0]
    stand.client.close()
    stand.wait(lambda: stand.relay.gone)
    assert "left with 1 of 3 segments in" in stand.relay.gone
    assert stand.segment(1) == bytes(LENGTH) and stand.relay.error is None


def test_frame_not_of_the_layout_is_the_clients_fault(stand):
    """A frame whose length is not its segment's: the client broke the
    protocol (an error, not a leave)."""
    stand.client.sendall(early_protocol.frame_header(2, LENGTH + 1))
    stand.wait(lambda: stand.relay.error)
    assert "segment frame 2 of 1025 bytes" in stand.relay.error
    assert not stand.relay.gone


def test_cut_ends_a_connection_the_client_holds_open(stand):
    """A half-open connection (the client silent, its socket open) cut
    for a resume: the relay sees the client gone, with the cause."""
    stand.client.sendall(frame(0))
    assert stand.haves(1) == [0]
    stand.relay.cut("a resume replaced the client's connection")
    stand.wait(lambda: stand.relay.gone)
    assert stand.relay.gone == "a resume replaced the client's connection"


class Waiter:
    """A synthesis as Orphans sees it; cut_client behaves as
    EarlyStart's: the synthesis notices and waits to be resumed."""

    def __init__(self, orphans, key, cuttable=True):
        self.orphans, self.key, self.cuttable = orphans, key, cuttable
        self.adopted = None
        self.cuts = 0

    def cut_client(self):
        if not self.cuttable:
            return False
        self.cuts += 1
        threading.Timer(0.1, self.orphans.wait,
                        args=(*self.key, self)).start()
        return True

    def adopt(self, sock, released):
        self.adopted = sock

    def all_in(self):
        return not self.cuttable


def test_resume_takes_over_a_connection_still_open():
    orphans = Orphans()
    key = ("phone0", "vm-1")
    waiter = Waiter(orphans, key)
    orphans.opened(*key, waiter)
    # Another owner's resume neither finds nor disturbs it.
    assert orphans.take("phone1", "vm-1", "sock", None) is None
    assert waiter.cuts == 0
    assert orphans.take(*key, "sock", None) is waiter
    assert waiter.cuts == 1 and waiter.adopted == "sock"
    assert not orphans.completing(*key)
    # Once its relay stopped, nothing cuts it.
    orphans.closed(*key)
    assert orphans.take(*key, "sock2", None) is None and waiter.cuts == 1


def test_resume_of_a_synthesis_with_every_segment_in_is_refused():
    """Every segment in: the synthesis needs no client to end, so its
    connection is not cut, and the resume finds nothing to take."""
    orphans = Orphans()
    key = ("phone0", "vm-1")
    waiter = Waiter(orphans, key, cuttable=False)
    orphans.opened(*key, waiter)
    assert orphans.take(*key, "sock", None) is None
    assert waiter.adopted is None and orphans.completing(*key)
    assert not orphans.completing("phone1", "vm-1")


def test_a_client_that_leaves_too_often_is_let_go():
    """After MAX_RESUMES resumes, the next leave ends the synthesis (a
    client cannot hold the service's slot by leaving and coming back)."""
    from types import SimpleNamespace
    from qemu_handoff.synthesis.early_synthesis import (MAX_RESUMES,
                                                         EarlyStart)
    from qemu_handoff.synthesis.service import Refused
    es = EarlyStart.__new__(EarlyStart)
    es.s = SimpleNamespace(server=SimpleNamespace(reconnect_timeout=60))
    es.relay = SimpleNamespace(gone="the client left")
    es.resumes = MAX_RESUMES
    with pytest.raises(Refused, match=f"after {MAX_RESUMES} resumes: "
                       "synthesis abandoned"):
        es._wait_for_client()
