# SPDX-License-Identifier: GPL-2.0-or-later
"""The fork names itself, and QMP/HMP report the linked C++ engine."""

import os
import subprocess

import pytest

from qemu_handoff.qmp import QMPClient
from qemu_handoff.guest import QEMU

# Written by the engine's own unit test against the same libraries; here we
# check that QEMU reports what the engine says, end to end through QAPI.
EXPECTED_CODECS = ["none", "zstd", "lzma", "zlib"]
# The version the build was made from (VERSION at the top of the tree).
with open(os.path.join(os.path.dirname(__file__), "..", "..",
                       "VERSION")) as _f:
    VERSION = _f.read().strip()


@pytest.fixture
def qemu(tmp_path):
    sock = str(tmp_path / "qmp")
    proc = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults",
                             "-display", "none",
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = QMPClient(sock)
    yield client
    client.cmd("quit")
    client.close()
    proc.wait(timeout=10)


def test_version_names_the_fork():
    out = subprocess.run([QEMU, "--version"], check=True, capture_output=True,
                         text=True).stdout
    first = out.splitlines()[0]
    assert first.startswith("QEMU emulator version 7.2."), first
    assert f"(qemu-handoff {VERSION}," in first, first
    assert "Debian 1:7.2+dfsg" in first, first


def test_query_handoff_answers_from_the_engine(qemu):
    info = qemu.cmd("query-handoff")
    assert info["version"] == VERSION
    assert info["hash"] == "xxh3-128"
    assert info["hash-version"].count(".") == 2
    assert [c["name"] for c in info["codecs"]] == EXPECTED_CODECS
    zstd = info["codecs"][1]
    assert zstd["library"] == "libzstd"
    assert zstd["library-version"].startswith("1.")
    assert (zstd["min-level"], zstd["max-level"]) == (1, 19)
    # query-version's package string carries the fork's name as well.
    assert "qemu-handoff" in qemu.cmd("query-version")["package"]


def test_hmp_info_handoff(qemu):
    text = qemu.hmp("info handoff")
    assert text.startswith(f"handoff engine: libhandoff {VERSION}\r\n")
    assert "hash: xxh3-128 (xxHash " in text
    assert "zstd  libzstd 1." in text and "levels 1..19" in text
    assert "lzma  liblzma 5." in text
    assert "zlib  zlib 1." in text
