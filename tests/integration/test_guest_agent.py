# SPDX-License-Identifier: GPL-2.0-or-later
"""The guest agent (guest-agent/): started at boot in the test guest, it
answers free-memory requests on its virtio-serial port with the extents
the handoff_free_pages kernel module took from the buddy free lists. Here
the test plays QEMU's part on the port's socket: the report is well
formed, lies inside guest RAM, agrees with the kernel's own MemFree, grows
by what a process frees, and a malformed request changes nothing.
"""

import os
import re
import socket
import struct

import pytest

from qemu_handoff.formats.agent_protocol import MAGIC, PORT_NAME, VERSION
from qemu_handoff.bases import (create_base, mem_free, start_from_base,
                                wait_heartbeat_after)

PAGE = 4096
MIB = 1 << 20


def agent_devices(workdir, name):
    """The agent's port, its chardev a socket the test connects to."""
    sock = os.path.join(workdir, f"{name}-agent.sock")
    return sock, [
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=agent0,path={sock},server=on,wait=off",
        "-device", f"virtserialport,bus=vser0.0,chardev=agent0,"
                   f"name={PORT_NAME}"]


@pytest.fixture(scope="module")
def base(module_tmp):
    work = str(module_tmp)
    return create_base(work, os.path.join(work, "base"),
                       extra_args=agent_devices(work, "base-vm")[1])


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, f"agent closed after {len(data)} of {n} bytes"
        data += chunk
    return data


def ask(conn, generation, magic=MAGIC):
    """One request and its report: (generation, [(gpa, bytes)])."""
    conn.sendall(struct.pack("<IIQ", magic, VERSION, generation))
    head = recv_exactly(conn, 24)
    rmagic, rversion, rgen, count = struct.unpack("<IIQQ", head)
    assert (rmagic, rversion) == (MAGIC, VERSION)
    body = recv_exactly(conn, 16 * count)
    return rgen, [struct.unpack_from("<QQ", body, 16 * i)
                  for i in range(count)]


def check_extents(extents, ram_bytes):
    last_end = -1
    for gpa, size in extents:
        assert gpa % PAGE == 0 and size % PAGE == 0 and size > 0
        assert gpa > last_end, "extents overlap, touch or are unsorted"
        assert gpa + size <= ram_bytes, f"{gpa:#x}+{size:#x} beyond RAM"
        last_end = gpa + size
    return sum(size for _, size in extents)


def test_agent_reports_the_free_lists(tmp_path, base, vms):
    sock, devices = agent_devices(str(tmp_path), "src")
    src = start_from_base("src", str(tmp_path), base, extra_args=devices)
    vms.append(src)
    wait_heartbeat_after(src, 1)
    ram = src.guest.mem_mib * MIB
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(sock)
        conn.settimeout(60)
        before_free = mem_free(src)
        gen, extents = ask(conn, 7)
        assert gen == 7
        free = check_extents(extents, ram)
        # The buddy lists are what MemFree counts (per-CPU lists are
        # neither); they move a little between the two reads.
        assert 0.9 * before_free <= free <= 1.1 * before_free, \
            (free, before_free)

        # 64 MiB held by a process, then freed: reported free again.
        src.shell("handoff-workload mem --mib 64 --pattern random --hold "
                  ">/tmp/hold.log 2>&1 & echo $! >/tmp/hold.pid; "
                  "while ! grep -q checksum= /tmp/hold.log; do sleep 0.2; "
                  "done", timeout=300)
        _, held = ask(conn, 8)
        held_free = check_extents(held, ram)
        assert held_free < free - 48 * MIB, (held_free, free)
        src.shell("kill $(cat /tmp/hold.pid); sleep 1")
        _, after = ask(conn, 9)
        assert check_extents(after, ram) > held_free + 48 * MIB

        # A malformed request is ignored; the next good one is answered.
        conn.sendall(struct.pack("<IIQ", 0xDEADBEEF, VERSION, 10))
        gen, _ = ask(conn, 11)
        assert gen == 11
    log = src.shell("cat /tmp/handoff-agent.log")
    assert "serving on /dev/vport" in log, log
    assert "ignoring a request with magic 0xdeadbeef" in log, log
    assert re.search(r"generation 9: \d+ extents, \d+ MiB free, \d+ ms", log)


def test_agent_without_its_port_exits_quietly(tmp_path, vms):
    """A VM without the port (every other test's): the agent says so and
    leaves, the guest runs as before."""
    from qemu_handoff.guest import GuestVM, create_overlay
    disk = create_overlay(str(tmp_path / "plain.qcow2"))
    vm = GuestVM("plain", str(tmp_path), disk).start()
    vms.append(vm)
    vm.wait_serial(r"handoff-guest: ready", timeout=300)
    # Started in the background just before "ready": wait for its word.
    log = vm.shell("while [ ! -s /tmp/handoff-agent.log ]; do sleep 0.2; "
                   "done; cat /tmp/handoff-agent.log; "
                   "ls /proc/handoff_free_pages", timeout=60)
    assert "no virtio-serial port named org.qemu-handoff.agent.0" in log
    assert "/proc/handoff_free_pages" in log
