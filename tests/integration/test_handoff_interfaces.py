# SPDX-License-Identifier: GPL-2.0-or-later
"""The handoff capability and parameters through QMP, HMP and -global, with
their rules and error messages (no guest needed)."""

import subprocess

import pytest

from qemu_handoff.qmp import QMPClient, QMPError
from qemu_handoff.guest import QEMU


def start(tmp_path, *args):
    sock = str(tmp_path / "qmp")
    proc = subprocess.Popen([QEMU, "-machine", "none", "-nodefaults",
                             "-display", "none", *args,
                             "-qmp", f"unix:{sock},server=on,wait=off"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, QMPClient(sock)


@pytest.fixture
def qemu(tmp_path):
    proc, client = start(tmp_path)
    yield client
    client.cmd("quit")
    proc.wait(timeout=10)


def test_parameters_defaults_and_set(qemu):
    p = qemu.cmd("query-migrate-parameters")
    assert (p["handoff-base"], p["handoff-compression"], p["handoff-delta"],
            p["handoff-workers"], p["handoff-random-order"]) == \
        ("", "auto", True, 0, True)
    qemu.cmd("migrate-set-parameters", handoff_base="/srv/base",
             handoff_compression="lzma-6", handoff_workers=3,
             handoff_random_order=False)
    p = qemu.cmd("query-migrate-parameters")
    assert (p["handoff-base"], p["handoff-compression"], p["handoff-workers"],
            p["handoff-random-order"]) == ("/srv/base", "lzma-6", 3, False)
    assert p["handoff-shared-disks"] == ""
    qemu.cmd("migrate-set-parameters", handoff_compression="zstd-9+prefix",
             handoff_shared_disks="data0,scratch")
    p = qemu.cmd("query-migrate-parameters")
    assert (p["handoff-compression"], p["handoff-shared-disks"]) == \
        ("zstd-9+prefix", "data0,scratch")


@pytest.mark.parametrize("value, message", [
    ("zstd-20", "zstd levels are 1..19"),
    ("lzma-10", "lzma levels are 0..9"),
    ("brotli-3", "codec 'brotli' is not none, zstd, lzma or zlib"),
    ("zstd-", "zstd levels are 1..19"),
    ("zlib-3+prefix", "+prefix needs zstd"),
    ("zstd-3+rle", "delta 'rle' is not xor or prefix"),
])
def test_bad_compression_is_refused(qemu, value, message):
    with pytest.raises(QMPError) as e:
        qemu.cmd("migrate-set-parameters", handoff_compression=value)
    assert message in e.value.desc
    assert qemu.cmd("query-migrate-parameters")["handoff-compression"] == "auto"


def test_capability_rules(qemu):
    def caps(**states):
        qemu.cmd("migrate-set-capabilities", capabilities=[
            {"capability": c.replace("_", "-"), "state": s}
            for c, s in states.items()])

    with pytest.raises(QMPError) as e:
        caps(handoff=True)
    assert "requires capability return-path" in e.value.desc
    with pytest.raises(QMPError) as e:
        caps(return_path=True, handoff=True, xbzrle=True)
    assert "cannot be combined with xbzrle" in e.value.desc
    caps(return_path=True, handoff=True)
    enabled = {c["capability"]: c["state"]
               for c in qemu.cmd("query-migrate-capabilities")}
    assert enabled["handoff"] and enabled["return-path"]


def test_hmp(qemu):
    qemu.hmp("migrate_set_parameter handoff-compression zstd-3")
    qemu.hmp("migrate_set_parameter handoff-delta off")
    text = qemu.hmp("info migrate_parameters")
    assert "handoff-compression: zstd-3" in text
    assert "handoff-delta: off" in text
    assert "handoff-base: ''" in text
    assert "zstd levels are 1..19" in \
        qemu.hmp("migrate_set_parameter handoff-compression zstd-99")
    assert "hand the VM off to uri" in qemu.hmp("help migrate_handoff")
    assert "save this VM as a base VM" in qemu.hmp("help handoff_base_create")


def test_migrate_handoff_without_base_fails_clearly(qemu):
    qemu.cmd("migrate-handoff", uri="exec:cat >/dev/null")
    while True:
        info = qemu.cmd("query-migrate")
        if info["status"] in ("failed", "completed"):
            break
    assert info["status"] == "failed"
    assert "set migration parameter handoff-base" in info["error-desc"]


def test_global_properties(tmp_path):
    proc, client = start(tmp_path, "-global", "migration.handoff-workers=5",
                         "-global", "migration.handoff-compression=zlib-9")
    p = client.cmd("query-migrate-parameters")
    client.cmd("quit")
    proc.wait(timeout=10)
    assert (p["handoff-workers"], p["handoff-compression"]) == (5, "zlib-9")


def test_cli_option_needs_a_base(tmp_path):
    out = subprocess.run([QEMU, "-machine", "none", "-nodefaults", "-display",
                          "none", "-handoff", "resume=on"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "-handoff needs base=DIR" in out.stderr
