# SPDX-License-Identifier: GPL-2.0-or-later
"""migrate-handoff end to end, on real guests in real QEMU processes.

A base is saved from the booted test guest; user VMs resume from it, run a
workload and are handed off to a destination holding the same base. The
moved VM must be the VM that left (qemu_handoff.identity), and handoff must
have sent less than the state it moved.
"""

import re
import time

import pytest

from qemu_handoff.bases import (create_base, run_workload, start_destination,
                                start_from_base, wait_heartbeat_after)
from qemu_handoff.identity import assert_same_vm
from qemu_handoff.wan import WanLink, loopback_relay


@pytest.fixture(scope="module")
def base(module_tmp):
    work = module_tmp / "base"
    return create_base(str(work), str(work / "base"))


def handoff(src, dst, **args):
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}", **args)
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    return info


@pytest.mark.parametrize("workload", ["mixed", "dirty"])
def test_handoff_preserves_ram_disk_and_execution(tmp_path, base, vms,
                                                  workload):
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, workload)
    src.wait_serial(r"^heartbeat \d+\r?$")

    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    info = handoff(src, dst)
    stats = info["handoff"]
    assert stats["zero"] > 0 and stats["base-ref"] > 0 and stats["self-ref"] > 0
    if workload == "mixed":
        # ~80 MiB of new state, half of it zeros, base copies or duplicates
        # and a quarter text: far less than that must cross the wire.
        assert stats["output-bytes"] < 40 << 20, stats
    else:
        # The dirtier kept rewriting pages: more than one round was needed.
        assert stats["iteration"] >= 1
    assert_same_vm(src, dst)


@pytest.mark.race
def test_handoff_while_every_page_is_rewritten(tmp_path, base, vms):
    """A guest rewriting its hot pages several times a second, moved over a
    slow (rate-limited) stream: many rounds, every dirty-log sync racing
    with vCPU writes. A write lost by dirty tracking under TCG shows as a
    stale page on the destination (it did, before the TLB reset moved
    after the clear and the sync waited for in-flight stores)."""
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, "hot")
    src.wait_serial(r"^sweep 8 MiB")
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    for vm in (src, dst):
        vm.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "auto-converge", "state": True}])
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=8 << 20)
    info = handoff(src, dst)
    assert info["handoff"]["iteration"] >= 2, info["handoff"]
    assert_same_vm(src, dst)


def test_handoff_delta_off_under_auto(tmp_path, base, vms):
    """handoff-delta off: the adaptive controller never picks a delta mode
    (it was silently ignored under auto), and a fixed mode naming one is
    refused."""
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, "mixed")
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    modes = set()
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}",
                delta=False, compression="zstd-3+xor")
    info = src.wait_migration()
    assert info["status"] == "failed"
    assert "uses a delta, and deltas are not allowed" in info["error-desc"]
    dst = start_destination("dst2", str(tmp_path), base)
    vms.append(dst)
    # A slow link, so that the controller moves off its starting mode
    # (at 16 MiB/s on a loaded CI machine it once stayed at zstd-1).
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=4 << 20)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}",
                delta=False, compression="auto")
    while True:
        info = src.qmp.cmd("query-migrate")
        if "handoff" in info:
            modes.add(info["handoff"]["mode"])
        if info["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert info["status"] == "completed", info.get("error-desc")
    # The refusal above proves the parameter reaches the encoder; whether
    # the controller leaves its starting mode within one short handoff
    # depends on the machine's load (CI saw it stay at zstd-1 twice), and
    # the engine's unit tests check that it never picks a delta mode when
    # deltas are off. Here: none was used.
    assert info["handoff"]["adaptive"] and info["handoff"]["xor-delta"] == 0
    assert modes and not any("+" in m for m in modes), modes
    assert_same_vm(src, dst)


def test_handoff_through_hmp(tmp_path, base, vms):
    """The operator's path: parameters and migrate_handoff in HMP, progress
    in info migrate."""
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, "mixed")
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    assert src.qmp.hmp(f"migrate_set_parameter handoff-base {base}") == ""
    assert src.qmp.hmp("migrate_set_parameter handoff-compression zstd-3") == ""
    assert src.qmp.hmp(f"migrate_handoff -d tcp:127.0.0.1:{dst.port}") == ""
    info = src.wait_migration()
    assert info["status"] == "completed", info.get("error-desc")
    assert info["handoff"]["mode"].startswith("zstd-3")
    assert not info["handoff"]["adaptive"]
    text = src.qmp.hmp("info migrate")
    assert f"handoff: base {info['handoff']['base-id']}" in text
    assert "handoff chunks: zero " in text and "handoff bytes: in " in text
    assert re.search(r"handoff link: [\d.]+ Mbit/s carried, [\d.]+ Mbit/s "
                     r"estimated", text), text
    assert_same_vm(src, dst)


# --- over an emulated WAN link -------------------------------------------

def test_handoff_over_wan_link(tmp_path, base, vms):
    """10 Mbit/s, 50 ms RTT, destination in its own network namespace."""
    with WanLink(rate_mbit=10, rtt_ms=50) as link:
        src = start_from_base("src", str(tmp_path), base)
        vms.append(src)
        run_workload(src, "mixed")
        dst = start_destination("dst", str(tmp_path), base,
                                wrap=link.ns_command([]))
        vms.append(dst)
        addr, port = link.relay_to(dst.port)
        src.qmp.cmd("migrate-handoff", uri=f"tcp:{addr}:{port}")
        readings = []
        while True:
            info = src.qmp.cmd("query-migrate")
            if info["status"] in ("completed", "failed", "cancelled"):
                break
            if info.get("handoff", {}).get("output-bytes", 0) > 4 << 20:
                readings.append(info["handoff"]["bandwidth"])
            time.sleep(0.5)
        assert info["status"] == "completed", info.get("error-desc")
        stats = info["handoff"]
        # What crossed the link is what the engine produced (plus QEMU's
        # framing and device state).
        assert link.relays[0].bytes_forwarded[0] >= stats["output-bytes"]
        # The controller measured the link, not the socket buffer: most of
        # its readings in the bulk of the transfer are near 10 Mbit/s.
        near = [b for b in readings if 7e6 / 8 < b < 12e6 / 8]
        assert len(near) >= len(readings) * 0.6, readings
        # What the downtime was priced at is the link's rate, never the
        # probe the estimate may be at by the end.
        assert 7e6 / 8 < stats["link-bandwidth"] < 12e6 / 8, stats
        assert_same_vm(src, dst)


# --- failures: the source runs on, the error names the cause ---------------

@pytest.fixture(scope="module")
def other_base(module_tmp):
    work = module_tmp / "other-base"
    return create_base(str(work), str(work / "base"))


@pytest.fixture
def busy_source(tmp_path, base, vms):
    """A user VM with fresh state, handing off at most 2 MiB/s (QEMU's own
    rate limit) so that the tests can interfere while it runs."""
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    run_workload(src, "mixed")
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=2 << 20)
    return src


def wait_progress(src, nbytes=1 << 20, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = src.qmp.cmd("query-migrate")
        assert info["status"] in ("setup", "active"), info
        if info.get("handoff", {}).get("output-bytes", 0) >= nbytes:
            return
        time.sleep(0.1)
    raise TimeoutError("handoff made no progress")


def assert_source_unharmed_and_retry(src, tmp_path, base, vms):
    assert src.status() == "running"
    wait_heartbeat_after(src, 2)
    src.qmp.cmd("migrate-set-parameters", max_bandwidth=128 << 20)
    dst = start_destination("retry", str(tmp_path), base)
    vms.append(dst)
    handoff(src, dst)
    assert_same_vm(src, dst)


def wait_exit(vm, timeout=30):
    vm.proc.wait(timeout=timeout)
    return vm.proc.returncode, vm.read_log()


def test_wrong_base_is_refused(tmp_path, base, other_base, vms):
    src = start_from_base("src", str(tmp_path), base)
    vms.append(src)
    dst = start_destination("dst", str(tmp_path), other_base)
    vms.append(dst)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    info = src.wait_migration()
    assert info["status"] == "failed"
    # The destination said why, over the return path.
    assert "HANDOFF_E_WRONG_BASE" in info["error-desc"], info
    code, log = wait_exit(dst)
    assert code != 0
    assert "HANDOFF_E_WRONG_BASE" in log, log
    assert_source_unharmed_and_retry(src, tmp_path, base, vms)


def test_corrupt_stream_is_detected(tmp_path, base, busy_source, vms):
    src = busy_source
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)

    def flip(offset, data):
        # One bit, somewhere in the second MiB: inside a compressed frame.
        at = (1 << 20) + 4321
        if offset <= at < offset + len(data):
            i = at - offset
            data = data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]
        return data

    relay, port = loopback_relay(dst.port, tamper=flip)
    try:
        src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{port}")
        info = src.wait_migration()
        assert info["status"] == "failed"
        assert "Handoff failed on the destination: HANDOFF_E_" in \
            info["error-desc"], info
        code, log = wait_exit(dst)
        assert code != 0
        assert "handoff: HANDOFF_E_" in log, log
    finally:
        relay.stop()
    assert_source_unharmed_and_retry(src, tmp_path, base, vms)


def test_cut_link_fails_cleanly(tmp_path, base, busy_source, vms):
    src = busy_source
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    relay, port = loopback_relay(dst.port)
    try:
        src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{port}")
        wait_progress(src)
        relay.cut()
        info = src.wait_migration()
        assert info["status"] == "failed"
        assert info.get("error-desc"), info
        code, _ = wait_exit(dst)
        assert code != 0
    finally:
        relay.stop()
    assert_source_unharmed_and_retry(src, tmp_path, base, vms)


def test_killed_destination(tmp_path, base, busy_source, vms):
    src = busy_source
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    wait_progress(src)
    dst.proc.kill()
    info = src.wait_migration()
    assert info["status"] == "failed"
    assert "the connection to the destination ended before it confirmed " \
        "the handoff" in info.get("error-desc", ""), info
    assert_source_unharmed_and_retry(src, tmp_path, base, vms)


def test_cancel(tmp_path, base, busy_source, vms):
    src = busy_source
    dst = start_destination("dst", str(tmp_path), base)
    vms.append(dst)
    src.qmp.cmd("migrate-handoff", uri=f"tcp:127.0.0.1:{dst.port}")
    wait_progress(src)
    src.qmp.cmd("migrate_cancel")
    info = src.wait_migration()
    assert info["status"] == "cancelled"
    code, _ = wait_exit(dst)
    assert code != 0
    assert_source_unharmed_and_retry(src, tmp_path, base, vms)
