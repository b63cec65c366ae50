# SPDX-License-Identifier: GPL-2.0-or-later
"""migrate-handoff end to end, on real guests in real QEMU processes.

A base is saved from the booted test guest; user VMs resume from it, run a
workload and are handed off to a destination holding the same base. The
moved VM must be the VM that left (tests/lib/identity.py), and handoff must
have sent less than the state it moved.
"""

import pytest

from handoff_env import (create_base, run_workload, start_destination,
                         start_from_base)
from identity import assert_same_vm
from vm import free_tcp_port


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    work = tmp_path_factory.mktemp("base")
    return create_base(str(work), str(work / "base"))


@pytest.fixture
def vms():
    started = []
    yield started
    for vm in started:
        vm.stop()


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

    gdb_port = free_tcp_port()
    dst = start_destination("dst", str(tmp_path), base,
                            extra_args=["-gdb", f"tcp:127.0.0.1:{gdb_port}"])
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
    assert_same_vm(src, dst, gdb_port)
