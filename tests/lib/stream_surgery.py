# SPDX-License-Identifier: GPL-2.0-or-later
"""Cuts pieces out of a live migration stream, as an attacker between two
cloudlets could, for tests that the destination notices.

QEMU's stream is a sequence of sections; a live section ("handoff") comes
in parts (START, PART..., END), each a header, the section's own bytes and
a footer. The handoff section's bytes are blocks (migration/
handoff-stream.h): u8 DATA + be32 length + bytes, u8 END, u8 EOS. Device
sections that follow have no length, so the filter parses only what it
needs: it finds the handoff section's START, follows its parts exactly,
and passes the rest through untouched.
"""

import struct

QEMU_VM_SECTION_START = 0x01
QEMU_VM_SECTION_PART = 0x02
QEMU_VM_SECTION_END = 0x03
QEMU_VM_SECTION_FOOTER = 0x7E
BLOCK_EOS, BLOCK_DATA, BLOCK_END = 0, 1, 2


class HandoffTailDropper:
    """A relay tamper function (wan.DelayRelay) that removes the end of the
    handoff section: with drop="section", its whole last part (final
    round, end record, END block); with drop="end-block", only the END
    block that tells the destination the engine stream is complete."""

    def __init__(self, drop="section"):
        assert drop in ("section", "end-block")
        self.drop = drop
        self.buf = b""
        self.state = "search"
        self.section_id = None
        self.dropping = False
        self.dropped = 0

    def __call__(self, offset, data):
        self.buf += data
        out = bytearray()
        while True:
            step = getattr(self, "_" + self.state)(out)
            if not step:
                break
        return bytes(out)

    def _emit(self, out, n):
        if self.dropping:
            self.dropped += n
        else:
            out += self.buf[:n]
        self.buf = self.buf[n:]

    def _search(self, out):
        tail = b"\x07handoff" + struct.pack(">II", 0, 1)
        at = self.buf.find(tail)
        if at < 5 or self.buf[at - 5] != QEMU_VM_SECTION_START:
            # Keep enough for a header that straddles two reads.
            keep = len(tail) + 5
            if len(self.buf) > keep:
                self._emit(out, len(self.buf) - keep)
            return False
        self.section_id = self.buf[at - 4:at]
        self._emit(out, at + len(tail))
        self.state = "blocks"
        return True

    def _blocks(self, out):
        if not self.buf:
            return False
        kind = self.buf[0]
        if kind == BLOCK_DATA:
            if len(self.buf) < 5:
                return False
            n = 5 + struct.unpack(">I", self.buf[1:5])[0]
            if len(self.buf) < n:
                return False
            self._emit(out, n)
        elif kind == BLOCK_END:
            was = self.dropping
            self.dropping = was or self.drop == "end-block"
            self._emit(out, 1)
            self.dropping = was
        elif kind == BLOCK_EOS:
            self._emit(out, 1)
            self.state = "footer"
        else:
            raise AssertionError(f"not a handoff block: {kind}")
        return True

    def _footer(self, out):
        if len(self.buf) < 5:
            return False
        assert self.buf[0] == QEMU_VM_SECTION_FOOTER and \
            self.buf[1:5] == self.section_id, self.buf[:5]
        self._emit(out, 5)
        self.dropping = False
        self.state = "sections"
        return True

    def _sections(self, out):
        if len(self.buf) < 5:
            return False
        kind = self.buf[0]
        if kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END) and \
                self.buf[1:5] == self.section_id:
            self.dropping = (kind == QEMU_VM_SECTION_END and
                             self.drop == "section")
            self._emit(out, 5)
            self.state = "blocks"
        else:
            self.state = "rest"
        return True

    def _rest(self, out):
        if self.buf:
            self._emit(out, len(self.buf))
        return False
