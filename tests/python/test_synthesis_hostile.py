# SPDX-License-Identifier: GPL-2.0-or-later
"""The synthesis service against a compromised QEMU and hostile clients,
without QEMU: its registry, ledger, QMP client and request handling
driven directly, with stand-in processes, files under tmp_path and
socket pairs.

A VM's QEMU runs as a uid of its own which owns the VM's directory
(WORKDIR/NAME): whatever is in there may be a FIFO, a link, a directory
or a huge file, and the root service must trust none of it."""

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from qemu_handoff.synthesis import registry
from qemu_handoff.synthesis.registry import VMRecord, scan, start_time

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def finishes(fn, *args, timeout=5):
    """fn(*args) in a thread: (its result or exception, seconds), or
    AssertionError if it has not returned within @timeout (it hangs)."""
    out = {}

    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as e:          # noqa: B902 - reported below
            out["error"] = e
    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__name__} still runs after {timeout} s"
    return out, time.monotonic() - start


@pytest.fixture
def stand_ins():
    procs = []

    def start(*args, **kw):
        proc = subprocess.Popen([*SLEEPER, *args], **kw)
        procs.append(proc)
        return proc
    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def record_of(workdir, name, proc, uid=0, **fields):
    os.makedirs(os.path.join(workdir, name), exist_ok=True)
    values = dict(owner="phone0", name=name, pid=proc.pid,
                  started=start_time(proc.pid), uid=uid, state="running",
                  address="127.0.0.1", ports={}, loopback={},
                  workdir=os.path.join(workdir, name))
    values.update(fields)
    return VMRecord(**values)


# --- 1. records: the service's alone ---------------------------------------

def test_records_are_not_in_the_vms_directory(tmp_path, stand_ins):
    """A record is written where only the service writes (0600 in a 0700
    directory of its own), nothing of it in the VM's directory."""
    workdir = str(tmp_path / "vms")
    record = record_of(workdir, "vm-a", stand_ins())
    vm_dir = os.path.join(workdir, "vm-a")
    os.chown(vm_dir, 250000, 250000)          # the VM's, as launcher makes it
    record.save()
    assert os.listdir(vm_dir) == []
    records = os.path.join(workdir, registry.RECORDS)
    st = os.lstat(records)
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
    st = os.lstat(os.path.join(records, "vm-a.json"))
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o600
    assert VMRecord.load(workdir, "vm-a").pid == record.pid


def test_scan_skips_hostile_records_and_adopts_the_good_one(tmp_path,
                                                              stand_ins):
    """Records that are FIFOs, links, directories, huge files, JSON nested
    past the recursion limit or with fields out of range are logged and
    skipped, never hang the scan nor stop it; a VM directory's own
    vm.json (an earlier release's place, the VM's to write) is not
    read."""
    workdir = str(tmp_path / "vms")
    good = record_of(workdir, "vm-good", stand_ins())
    good.save()
    records = os.path.join(workdir, registry.RECORDS)
    os.mkfifo(os.path.join(records, "vm-fifo.json"))
    os.symlink(os.path.join(records, "vm-good.json"),
               os.path.join(records, "vm-link.json"))
    os.mkdir(os.path.join(records, "vm-dir.json"))
    with open(os.path.join(records, "vm-huge.json"), "w") as f:
        f.truncate(1 << 30)
    doc = json.load(open(os.path.join(records, "vm-good.json")))
    bad = {"vm-deep": "[" * 100000,
           "vm-ports": dict(doc, name="vm-ports", ports={"80": 70000},
                            loopback={"80": 1}),
           "vm-keys": dict(doc, name="vm-keys", ports={"80": 8080},
                           loopback={"81": 8080}),
           "vm-uid": dict(doc, name="vm-uid", uid="0"),
           "vm-name": dict(doc, name="../../etc"),
           "vm-owner": dict(doc, name="vm-owner", owner="x" * 100000),
           "vm-pid": dict(doc, name="vm-pid", pid=True)}
    for name, value in bad.items():
        with open(os.path.join(records, name + ".json"), "w") as f:
            f.write(value if isinstance(value, str) else json.dumps(value))
    # A VM directory's own vm.json: a FIFO that would block a reader.
    os.makedirs(os.path.join(workdir, "vm-old"))
    os.mkfifo(os.path.join(workdir, "vm-old", "vm.json"))
    log = []
    out, _ = finishes(scan, workdir, log.append)
    assert "error" not in out, out
    assert [r.name for r in out["result"]] == ["vm-good"], log
    for name in ("fifo", "link", "dir", "huge", *(n[3:] for n in bad)):
        assert any(f"vm-{name}.json: ignored" in line for line in log), \
            (name, log)
    assert any("vm-old/vm.json: an earlier release's record" in line
               for line in log), log


def test_records_dir_of_another_owner_is_not_read(tmp_path, stand_ins):
    workdir = str(tmp_path / "vms")
    record_of(workdir, "vm-a", stand_ins()).save()
    os.chown(os.path.join(workdir, registry.RECORDS), 250000, 250000)
    log = []
    assert scan(workdir, log.append) == []
    assert "is not this service's alone" in log[0], log


def test_relays_only_on_the_services_own_address(tmp_path):
    """A record whose address is not the service's --forward-address gets
    no relay (a record is not trusted to pick where the service
    listens)."""
    record = VMRecord("phone0", "vm-x", 1, 1, 0, "running", "127.0.0.2",
                      {8080: 40000}, {8080: 40001}, str(tmp_path / "vm-x"))
    log = []
    record.restore_relays(log.append, "127.0.0.3")
    assert record.relays == [] and "not relayed" in log[0], log


# --- 4. a VM known by what it cannot change --------------------------------

VM_UID = 251000
# Runs with real uid VM_UID but effective uid another: /proc/PID is the
# effective uid's.
OTHER_EUID = [sys.executable, "-c", "import os, time; "
              f"os.setresuid({VM_UID}, {VM_UID + 1}, {VM_UID + 1}); "
              "time.sleep(60)"]


def test_vm_known_by_pid_start_and_uid_not_its_command_line(tmp_path,
                                                            stand_ins):
    """A QEMU that overwrote its command line (no -name NAME) is still the
    VM; a process of another uid whose command line names the VM is
    not."""
    workdir = str(tmp_path / "vms")
    rewritten = stand_ins(user=VM_UID, group=VM_UID)
    impostor = stand_ins("-name", "vm-b")
    time.sleep(0.2)
    mine = record_of(workdir, "vm-a", rewritten, uid=VM_UID)
    other = record_of(workdir, "vm-b", impostor, uid=VM_UID)
    assert mine.alive()
    assert not other.alive()
    other.stop()
    assert impostor.poll() is None, "a process not the VM's uid was signalled"


def test_uid_pool_sees_the_real_uids_of_processes():
    """The uids in use are read from /proc/PID/status (real, effective,
    saved, filesystem), not from the owner of /proc/PID (the effective
    uid only): no VM gets a uid another process still runs as. (The
    review's case, a non-dumpable process, leaves /proc/PID its
    effective uid's on Linux 6.18: task_dump_owner() spares world-
    readable directories; only the files inside become root's.)"""
    from qemu_handoff.synthesis.confinement import (ConfinementError,
                                                    UidPool)
    proc = subprocess.Popen(OTHER_EUID)
    try:
        deadline = time.monotonic() + 5
        while os.stat(f"/proc/{proc.pid}").st_uid != VM_UID + 1:
            assert time.monotonic() < deadline, "never took its uids"
            time.sleep(0.02)
        with pytest.raises(ConfinementError):
            UidPool(first=VM_UID, count=1).take()
    finally:
        proc.kill()
        proc.wait()


# --- 2. one VM's clean-up refuses no one -----------------------------------

class FailingRecord:
    """A record whose clean-up fails as a VM's directory can make it fail
    (its qmp.sock replaced by a directory)."""

    def __init__(self, owner="phone0", name="vm-bad", alive=False):
        self.owner, self.name, self._alive = owner, name, alive
        self.workdir = "/nonexistent/vm-bad"
        self.stops = 0

    def alive(self):
        return self._alive

    def stop(self):
        self.stops += 1
        self._alive = False     # its QEMU ended, its files' removal failed
        raise IsADirectoryError(21, "Is a directory", "qmp.sock")

    def public(self):
        return {"vm": self.name}


def test_ledger_prunes_past_a_failing_clean_up():
    from qemu_handoff.synthesis.service import VMLedger
    log = []
    ledger = VMLedger(4, 4, log=log.append)
    bad = FailingRecord()
    ledger.adopt([bad, FailingRecord(name="vm-bad2")])
    ledger.reserve("phone1")            # raised IsADirectoryError
    assert ledger.owned_by("phone0") == [] and bad.stops == 1
    assert ledger.take("phone0", "vm-bad") is None
    assert any("VM vm-bad of phone0 ended, its clean-up failed" in line
               for line in log), log


def test_vm_end_removes_a_qmp_socket_replaced_by_a_directory(tmp_path):
    """The VM's qmp.sock is a directory (holding a link to a file of the
    host): removed as a tree, the link not followed."""
    from qemu_handoff.synthesis.launcher import LaunchedVM
    host_file = tmp_path / "host-file"
    host_file.write_text("keep")
    vm_dir = tmp_path / "vm-a"
    (vm_dir / "qmp.sock").mkdir(parents=True)
    os.symlink(host_file, vm_dir / "qmp.sock" / "link")
    vm = object.__new__(LaunchedVM)
    vm.qmp, vm.proc = None, subprocess.Popen(["true"])
    vm.proc.wait()
    vm.workdir, vm.qmp_path = str(vm_dir), str(vm_dir / "qmp.sock")
    vm._end()
    assert not os.path.lexists(vm_dir / "qmp.sock")
    assert host_file.read_text() == "keep"


def test_stop_is_answered_when_its_clean_up_fails(tmp_path):
    from qemu_handoff.synthesis.service import SynthesisHandler, VMLedger
    log = []
    ledger = VMLedger(4, 4, log=log.append)
    ledger.adopt([FailingRecord(alive=True)])
    ours, theirs = socket.socketpair()
    handler = object.__new__(SynthesisHandler)
    handler.request = ours
    server = type("Server", (), {"vms": ledger, "log": log.append})()
    with ours, theirs:
        handler._manage(server, "stop from test", "phone0",
                        {"op": "stop", "name": "vm-bad"})
        theirs.settimeout(5)
        answer = json.loads(theirs.recv(65536))
    assert answer == {"ok": True, "vm": "vm-bad", "state": "stopped"}, answer


# --- 3. QMP reads and the stream's feed, bounded ---------------------------

def hostile_qmp(path, then):
    """A QMP server at @path that greets, accepts qmp_capabilities, then
    answers the next command with then(connection)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            conn.recv(4096)
            conn.sendall(b'{"return": {}}\n')
            conn.recv(4096)
            try:
                then(conn)
            except OSError:
                pass
    threading.Thread(target=serve, daemon=True).start()
    return listener


def endless(chunk, seconds=10):
    def then(conn):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(chunk)
    return then


def test_qmp_line_without_end_is_bounded(tmp_path):
    from qemu_handoff.qmp import QMPClient
    with hostile_qmp(tmp_path / "qmp.sock", endless(b"x" * 65536)):
        qmp = QMPClient(str(tmp_path / "qmp.sock"), timeout=5)
        out, seconds = finishes(qmp.cmd, "query-status", timeout=8)
        qmp.close()
    assert isinstance(out.get("error"), ConnectionError), out
    assert "line" in str(out["error"]) and seconds < 3, (out, seconds)


def test_qmp_endless_events_end_at_the_timeout(tmp_path):
    from qemu_handoff.qmp import MAX_EVENTS, QMPClient
    event = b'{"event": "X", "data": {}}\n' * 1000
    with hostile_qmp(tmp_path / "qmp.sock", endless(event)):
        qmp = QMPClient(str(tmp_path / "qmp.sock"), timeout=1)
        out, seconds = finishes(qmp.cmd, "query-status", timeout=6)
        assert isinstance(out.get("error"), TimeoutError), out
        assert seconds < 2.5 and len(qmp.events) <= MAX_EVENTS
        qmp.close()


def test_qmp_answers_that_are_not_objects(tmp_path):
    from qemu_handoff.qmp import QMPClient
    with hostile_qmp(tmp_path / "qmp.sock",
                     lambda conn: (conn.sendall(b'1\n'), time.sleep(3))):
        qmp = QMPClient(str(tmp_path / "qmp.sock"), timeout=2)
        out, _ = finishes(qmp.cmd, "query-status")
        qmp.close()
    assert isinstance(out.get("error"), ConnectionError), out


def test_feed_to_a_qemu_that_stops_reading_ends(tmp_path):
    """QEMU takes none of the stream: the feed gives up after the stall
    bound, the synthesis slot is not held for ever."""
    from types import SimpleNamespace
    from qemu_handoff.synthesis.launcher import LaunchError
    from qemu_handoff.synthesis.service import Spool, Synthesis
    spool = Spool(str(tmp_path / "stream.spool"))
    spool._writer.write(b"\0" * (16 << 20))
    spool._writer.close()
    spool.written, spool.done = 16 << 20, True
    stream = tmp_path / "stream.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(stream))
        listener.listen(1)
        synthesis = object.__new__(Synthesis)
        synthesis.server = SimpleNamespace(client_timeout=0.5)
        synthesis.vm = SimpleNamespace(stream_path=str(stream))
        synthesis.deadline = time.monotonic() + 30
        out, seconds = finishes(synthesis._feed, spool)
    assert isinstance(out.get("error"), LaunchError), out
    assert "took nothing of the stream" in str(out["error"]) and seconds < 3, out


# --- 5. connections: the request line's own deadline, admission, per address

@pytest.fixture
def service(tmp_path):
    """A SynthesisServer (plaintext, loopback) run in a thread: start(...)
    with its keyword arguments; (server, log)."""
    from qemu_handoff.synthesis.service import SynthesisServer
    (tmp_path / "bases").mkdir()
    started = []

    def start(**kw):
        log = []
        server = SynthesisServer(("127.0.0.1", 0), str(tmp_path / "bases"),
                                 str(tmp_path / "vms"), log=log.append, **kw)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server, log
    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def connect(server):
    return socket.create_connection(server.server_address, 5)


def test_request_line_has_its_own_short_deadline(service, monkeypatch):
    """A client trickling its request line a byte at a time (each within
    --client-timeout) is cut off at the line's own deadline, not after
    --transfer-timeout."""
    from qemu_handoff.synthesis import service as service_module
    monkeypatch.setattr(service_module, "REQUEST_LINE_TIMEOUT_S", 0.5,
                        raising=False)
    server, log = service(client_timeout=3, transfer_timeout=60)
    with connect(server) as sock:
        start = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        while time.monotonic() - start < 5 and not answer:
            try:
                sock.sendall(b" ")
                answer = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
        seconds = time.monotonic() - start
    assert b"request line" in answer and seconds < 2, (answer, seconds, log)


def test_client_not_admitted_is_refused_before_its_request(service):
    """serve --clients: a client the file does not name is refused right
    after the handshake, whatever it would ask (list included), without
    a byte of its request read."""
    from qemu_handoff.synthesis.client_policy import ClientPolicy
    server, log = service(client_timeout=5,
                          policy=ClientPolicy({"phone0": {
                              "bases": None, "max-vms": None}}))
    with connect(server) as sock:
        sock.settimeout(2)
        answer = json.loads(sock.recv(65536))
    assert answer == {"ok": False,
                      "error": "this service takes no requests from you"}
    assert any("refused, not among --clients" in line for line in log), log


def test_connections_per_address_are_capped(service):
    """Before any handshake: a fifth connection from one address is
    closed at once, however many the service takes in all."""
    server, log = service(client_timeout=5, max_clients=4)
    idle = [connect(server) for _ in range(4)]
    try:
        time.sleep(0.3)
        with connect(server) as sock:
            sock.settimeout(2)
            start = time.monotonic()
            assert sock.recv(1) == b""
            assert time.monotonic() - start < 1
        assert any("4 connections from 127.0.0.1 are open" in line
                   for line in log), log
    finally:
        for sock in idle:
            sock.close()


# --- 6..9: what a client sends, what it hears -------------------------------

def test_request_line_nested_past_the_recursion_limit_is_refused():
    from qemu_handoff.synthesis.service import ClientClock, Refused, recv_line
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"[" * 4000 + b"\n")
        with pytest.raises(Refused, match="not JSON"):
            recv_line(ClientClock(5, 5), ours)


def test_description_without_disks_is_a_named_refusal(tmp_path):
    from qemu_handoff.formats.overlay import OverlayError
    from qemu_handoff.synthesis.launcher import check_machine
    description = {"version": 2, "base": {"id": "0" * 32},
                   "machine": {"type": "pc", "accel": "kvm"}}
    with pytest.raises(OverlayError, match="disks"):
        check_machine(description, str(tmp_path))


@pytest.mark.parametrize("base_id", ["x" * 100000 + "\nforged log line",
                                     "A" * 32, "0" * 31, "0" * 33],
                         ids=["huge", "upper", "short", "long"])
def test_base_id_must_be_32_lowercase_hex_digits(base_id):
    from qemu_handoff.formats.overlay import OverlayError, parse_description
    raw = json.dumps({"version": 2, "base": {"id": base_id},
                      "machine": {"type": "pc", "accel": "kvm"},
                      "disks": []}).encode()
    with pytest.raises(OverlayError) as refusal:
        parse_description(raw)
    assert len(str(refusal.value)) < 200 and "\n" not in str(refusal.value)


@pytest.mark.parametrize("early,cause", [
    (1, "early-start is not an object"),
    ({"stream-version": 2, "root": "ab" * 32, "order-chunks": 1},
     "stream-version must be 3"),
    ({"stream-version": 3.0, "root": "ab" * 32, "order-chunks": 1},
     "stream-version must be 3"),
    ({"stream-version": 3, "root": "AB" * 32, "order-chunks": 1},
     "root is not a SHA-256"),
    ({"stream-version": 3, "root": "ab" * 33, "order-chunks": 1},
     "root is not a SHA-256"),
    ({"stream-version": 3, "root": "ab" * 32, "order-chunks": -1},
     "order-chunks is not a count"),
], ids=["not-object", "version", "float", "upper", "long", "negative"])
def test_early_start_object_is_read_strictly(early, cause):
    """An overlay's early-start object (a segmented stream's root) is
    read field by field, a malformed one refused by name; a good one is
    read, its root as bytes."""
    from qemu_handoff.formats.overlay import OverlayError, parse_description
    described = {"version": 2, "base": {"id": "0" * 32},
                 "machine": {"type": "pc", "accel": "kvm"}, "disks": []}
    with pytest.raises(OverlayError, match=cause):
        parse_description(json.dumps({**described,
                                      "early-start": early}).encode())
    from qemu_handoff.formats.overlay import early_start
    good = parse_description(json.dumps({**described, "early-start": {
        "stream-version": 3, "root": "ab" * 32,
        "order-chunks": 7}}).encode())
    assert early_start(good).root == bytes([0xab]) * 32
    assert early_start(good).order_chunks == 7


def test_segments_begin_where_the_description_says_or_refused():
    """segments-bytes becomes file offsets in one place: a total that
    leaves no migration stream, or none at all, is refused by name; the
    segments end where the file ends."""
    from qemu_handoff.formats.overlay import (HEADER_BYTES, EarlyStart,
                                              Header, OverlayError)
    header = Header(description_bytes=100, stream_bytes=5000,
                    digest=bytes(32))
    size = HEADER_BYTES + 100 + 5000
    assert EarlyStart(b"", 1, 4096).segments(header) == (size - 4096, size)
    for total, cause in ((None, "does not name its segments' total"),
                         (5000, "segments-bytes 5000 leaves no room"),
                         (1 << 40, "leaves no room for the migration")):
        with pytest.raises(OverlayError, match=cause):
            EarlyStart(b"", 1, total).segments(header)


def test_launch_errors_are_not_told_as_they_are():
    """Nothing the launcher raises today is the client's own words: a
    LaunchError that looks like the old launcher's refusals but names
    a host path is not passed on."""
    from qemu_handoff.synthesis.launcher import LaunchError
    from qemu_handoff.synthesis.service import public_cause
    error = LaunchError("ports to forward, but the VM has no user-mode "
                        "NIC (see /srv/cloudlet/secret/qemu.log)")
    assert public_cause(error) == "the VM could not be started"


def test_certificate_without_a_common_name_is_refused(tmp_path, service):
    """A certificate the CA signed but naming no client (no CN) is refused
    on the handshake, not taken as the peer's address."""
    from qemu_handoff.synthesis.transport import (client_context,
                                                  server_context)
    from qemu_handoff.tls import CertificateAuthority, _certtool
    ca = CertificateAuthority(str(tmp_path), "ca")
    service_creds = ca.credentials(str(tmp_path), "service", "server",
                                   "service.test")
    creds = tmp_path / "nameless"
    creds.mkdir()
    (creds / "ca-cert.pem").write_bytes(
        (tmp_path / "ca" / "ca-cert.pem").read_bytes())
    _certtool("--generate-privkey", "--outfile", "client-key.pem",
              cwd=str(creds))
    _certtool("--generate-certificate", "--load-privkey", "client-key.pem",
              "--load-ca-certificate", str(tmp_path / "ca" / "ca-cert.pem"),
              "--load-ca-privkey", str(tmp_path / "ca" / "ca-key.pem"),
              "--outfile", "client-cert.pem", cwd=str(creds),
              template="organization = nameless\ntls_www_client\n"
                       "signing_key\nencryption_key\nexpiration_days = 7\n")
    server, log = service(tls=server_context(service_creds))
    sock = connect(server)
    with client_context(str(creds)).wrap_socket(
            sock, server_hostname="service.test") as tls:
        try:
            tls.sendall(b'{"op": "list"}\n')
            answer = tls.recv(65536)
        except (OSError, ssl.SSLError):
            answer = b""
    assert answer == b"", answer
    assert any("certificate names no client" in line for line in log), log


def test_an_abandoned_synthesis_leaves_no_record(tmp_path, stand_ins):
    """Records are no longer in the VM's directory: removing that leaves
    the record, which abandon() removes too."""
    from types import SimpleNamespace
    from qemu_handoff.synthesis.service import Synthesis
    workdir = str(tmp_path / "vms")
    record = record_of(workdir, "vm-a", stand_ins(), state="loading")
    record.save()
    synthesis = object.__new__(Synthesis)
    synthesis.vm = SimpleNamespace(stop=lambda: None)
    synthesis.record, synthesis.workdir = record, record.workdir
    synthesis.abandon()
    assert os.listdir(workdir) == [registry.RECORDS]
    assert os.listdir(os.path.join(workdir, registry.RECORDS)) == []
