# SPDX-License-Identifier: GPL-2.0-or-later
"""The synthesis service: a cloudlet turns overlays it receives into VMs.

One connection is one synthesis (protocol in docs/synthesis.md):

  client -> request line (JSON: name, ports to forward), then the overlay
  service: header and description checked, base found by its content ID
           (unknown: refused before any bulk data is read), QEMU started;
           the stream is spooled to disk as it arrives and fed to QEMU as
           QEMU takes it, hashed on the way
  service -> one result line (JSON): the VM's forwarded ports and timings,
           or the reason it was refused

The VM runs only once the whole stream arrived, its SHA-256 matched the
header's and QEMU loaded it (QEMU runs it with -S until then); anything
else stops that QEMU and removes its files.

A client is a stranger: with TLS (the default, transport.py) only one
whose certificate the cloudlet's CA signed gets past the handshake, and
before any byte of its request is read. Each client is bounded: the VMs
it holds (and all clients together), the time its whole transfer may
take, not only each read, and a refusal closes its connection within a
second. It hears of its own VM only (name, forwarded ports, timings):
no host path, no other client's VM, no list of the cloudlet's bases.

The same port takes two more requests, of a client's own VMs: list, and
stop NAME (another client's VM is answered as a name no VM has). The VMs
outlive the service; registry.py keeps their records, which a restarted
service reads back.
"""

import collections
import json
import os
import secrets
import shutil
import socket
import socketserver
import ssl
import threading
import time
import traceback

from ..formats import manifest
from ..formats import overlay as overlay_file
from .base_check import TOOL, BaseCheckFailed, VerifiedBases
from .client_policy import ClientPolicy
from .confinement import ConfinementError
from . import early_protocol
from .early_resume import Orphans
from .launcher import LaunchedVM, LaunchError, check_machine
from .machine_args import Limits
from .registry import LOADING, VMRecord, remove_entry, scan
from .transport import client_identity
from ..formats.overlay import OverlayError

REQUEST_MAX = 4096
MAX_FORWARDS = 16             # ports one VM may have forwarded
CHUNK = 1 << 20
REFUSAL_LINGER_S = 1.0        # how long a refused client is read from,
REFUSAL_LINGER_BYTES = 8 << 20  # and how much of what it sends at most
HANDSHAKE_TIMEOUT_S = 10      # a TLS handshake, however slow the client
CONNECTIONS_PER_SLOT = 4      # connections held at once, per synthesis slot
CONNECTIONS_PER_ADDRESS = 4   # connections held at once, per peer address
REQUEST_LINE_TIMEOUT_S = 10   # the request line, however slow the client
LOAD_TIMEOUT_S = 600          # QEMU's time to load the stream, after the
                              # client's transfer deadline


class Refused(Exception):
    """A request refused, with the reason sent to the client and, for the
    operator's log only, @detail (which may name host paths)."""

    def __init__(self, reason, detail=None):
        super().__init__(reason)
        self.detail = detail


def public_cause(error):
    """What a client hears of @error; the operator's log gets all of it.
    Our own refusals and the overlay's faults (machine_args refuses what
    a description asks with OverlayError) name nothing of the host; a
    LaunchError carries QEMU's, qemu-img's or the system's words, and
    with them host paths: only its kind is told."""
    text = str(error)
    if isinstance(error, (Refused, OverlayError)):
        return text
    if text.startswith("QEMU refused the stream"):
        return "QEMU refused the stream"
    return "the VM could not be started"


def refused(error):
    """(the client's answer, the log's words) for @error."""
    cause = public_cause(error)
    detail = getattr(error, "detail", None) or str(error)
    said = detail if detail.startswith(cause) else f"{cause}: {detail}"
    return {"ok": False, "error": cause}, f"refused: {said}"


def find_bases(bases_dir):
    """Content ID -> base directory, for each base under @bases_dir."""
    bases = {}
    for name in sorted(os.listdir(bases_dir)):
        path = os.path.join(bases_dir, name)
        try:
            bases[manifest.read(path).id] = path
        except manifest.ManifestError:
            continue
    return bases


class ClientClock:
    """A client's time: at most @idle_s without a byte, and all it sends
    (request, header, description, stream) within @total_s of its
    connection, so that a client trickling a byte at a time cannot hold
    a slot for ever."""

    def __init__(self, idle_s, total_s, what="the transfer"):
        self.idle_s, self.total_s, self.what = idle_s, total_s, what
        self.start = time.monotonic()
        self.end = self.start + total_s

    def recv(self, sock, n):
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise Refused(self._overdue())
        sock.settimeout(min(self.idle_s, remaining))
        try:
            return sock.recv(n)
        except TimeoutError:
            if time.monotonic() >= self.end:
                raise Refused(self._overdue()) from None
            raise Refused(f"the client sent nothing for {self.idle_s:g} s: "
                          f"synthesis abandoned") from None

    def _overdue(self):
        return (f"{self.what} took longer than {self.total_s:g} s, this "
                f"service's limit: synthesis abandoned")


class VMLedger:
    """The VMs this service launched or found again after a restart
    (registry.VMRecord, each with its owner, a client's identity), and the
    syntheses on their way to being one: what --max-vms and
    --max-vms-per-client bound. A synthesis takes its place before it
    reads the overlay and gives it back if refused."""

    def __init__(self, max_total, max_per_owner, policy=None, log=print):
        """@policy: a ClientPolicy, which may give a client its own
        bound instead of @max_per_owner."""
        self.max_total, self.max_per_owner = max_total, max_per_owner
        self.log = log
        self.policy = policy or ClientPolicy()
        self._lock = threading.Lock()
        self._vms = []                          # VMRecords
        self._pending = collections.Counter()

    def _prune(self):
        """Forgets the VMs that ended (their records removed); locked.
        A clean-up that fails (the VM's directory is its QEMU's, which
        may have put anything there) is logged: the VM is forgotten all
        the same, and no one else refused for it."""
        live = []
        for record in self._vms:
            if record.alive():
                live.append(record)
                continue
            try:
                record.stop()
            except Exception as e:      # noqa: B902 - one VM's, logged
                self.log(f"VM {record.name} of {record.owner} ended, its "
                         f"clean-up failed: {type(e).__name__}: {e}")
        self._vms = live

    def adopt(self, records):
        """VMs a previous run of the service launched, still running."""
        with self._lock:
            self._vms.extend(records)

    def reserve(self, owner):
        with self._lock:
            self._prune()
            total = len(self._vms) + sum(self._pending.values())
            mine = (sum(1 for r in self._vms if r.owner == owner) +
                    self._pending[owner])
            if total >= self.max_total:
                raise Refused(f"busy: this service runs {self.max_total} "
                              f"VMs, the most it takes; retry later")
            if mine >= self.policy.max_vms(owner, self.max_per_owner):
                raise Refused(f"quota: you hold {mine} VMs here, the most "
                              f"this service gives one client")
            self._pending[owner] += 1

    def settle(self, owner, record=None):
        """Ends @owner's reservation: @record's VM runs, or (None) it
        never will."""
        with self._lock:
            self._pending[owner] -= 1
            if record is not None:
                self._vms.append(record)

    def owned_by(self, owner):
        with self._lock:
            self._prune()
            return [r for r in self._vms if r.owner == owner]

    def take(self, owner, name):
        """@owner's VM @name, no longer counted here, or None: whether
        there is no such VM or it is another client's is not told."""
        with self._lock:
            self._prune()
            for record in self._vms:
                if record.owner == owner and record.name == name:
                    self._vms.remove(record)
                    return record
        return None

    def take_all(self):
        with self._lock:
            records, self._vms = self._vms, []
        return records


def recv_exactly(clock, sock, n, what):
    data = b""
    while len(data) < n:
        chunk = clock.recv(sock, n - len(data))
        if not chunk:
            raise Refused(f"overlay truncated in its {what}")
        data += chunk
    return data


def recv_line(clock, sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = clock.recv(sock, 1)
        if not chunk:
            raise Refused("connection closed before the request line")
        data += chunk
        if len(data) > REQUEST_MAX:
            raise Refused("request line too long")
    try:
        request = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused("request line is not JSON") from None
    return parse_request(request)


# Each request ("op") and the fields it takes besides "op".
OPS = {"synthesize": {"name", "forward", "early-start"}, "list": set(),
       "stop": {"name"}, "resume": {"name"}}


def parse_request(request):
    """The request line's fields, checked: {"op": "synthesize" (the
    default: an overlay follows), "list" or "stop"; "name": str or None
    (stop's is required); "forward": [TCP ports]; "early-start": bool,
    whether an early-start overlay's VM runs before its segments are all
    in (the default)}."""
    if not isinstance(request, dict):
        raise Refused("request line is not a JSON object")
    op = request.get("op", "synthesize")
    if not isinstance(op, str) or op not in OPS:
        raise Refused("request line's op is not synthesize, list, stop or "
                      "resume")
    unknown = sorted(set(request) - OPS[op] - {"op"})
    if unknown:
        raise Refused(f"request line has unknown field {unknown[0]!r}")
    name = request.get("name")
    if name is not None and not isinstance(name, str):
        raise Refused("request line's name is not a string")
    if op in ("stop", "resume") and name is None:
        raise Refused(f"request line's {op} names no VM")
    forward = request.get("forward", [])
    if not isinstance(forward, list) or len(forward) > MAX_FORWARDS or \
            not all(type(p) is int and 0 < p < 65536 for p in forward):
        raise Refused(f"request line's forward is not a list of at most "
                      f"{MAX_FORWARDS} TCP ports")
    early = request.get("early-start", True)
    if type(early) is not bool:
        raise Refused("request line's early-start is not true or false")
    return {"op": op, "name": name, "forward": forward, "early-start": early}


class Spool:
    """Stream bytes kept on disk as they arrive, read back at QEMU's pace:
    the transfer does not wait for QEMU to start, nor QEMU for the end."""

    def __init__(self, path):
        self.path = path
        self._writer = open(path, "wb")
        # Opened now, before QEMU runs: the directory is QEMU's uid's, which
        # could put a link to a host file in the spool's place later.
        self._reader = open(path, "rb")
        self._cond = threading.Condition()
        self.written = 0
        self.done = False
        self.done_at = None     # when the last byte came in (or the end)
        self.error = None
        self.cancelled = False  # the synthesis failed: stop receiving

    def receive(self, clock, sock, check):
        try:
            while check.bytes < check.header.stream_bytes and \
                    not self.cancelled:
                data = clock.recv(sock, min(CHUNK, check.header.stream_bytes
                                            - check.bytes))
                if not data:
                    break
                check.update(data)
                self._writer.write(data)
                self._writer.flush()
                with self._cond:
                    self.written += len(data)
                    self._cond.notify_all()
            check.verify()
        except (Refused, OSError, OverlayError) as e:
            self.error = str(e)
        finally:
            self.done_at = time.monotonic()
            self._writer.close()
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def feed(self, out, stall_s, deadline):
        """Copies everything received into @out until the end (or an
        error: then stops, the stream being incomplete). TimeoutError if
        @out takes less than a chunk in @stall_s, or all is not in by
        @deadline (monotonic): QEMU, not the client, is what may stall
        here."""
        offset = 0
        with self._reader as f:
            while True:
                with self._cond:
                    while self.written == offset and not self.done:
                        if not self._cond.wait(_left(deadline)):
                            _left(deadline)
                    end, done = self.written, self.done
                while offset < end:
                    data = f.read(min(CHUNK, end - offset))
                    out.settimeout(min(stall_s, _left(deadline)))
                    try:
                        out.sendall(data)
                    except TimeoutError:
                        _left(deadline)
                        raise TimeoutError(
                            f"QEMU took nothing of the stream for "
                            f"{stall_s:g} s") from None
                    offset += len(data)
                if done and offset == self.written:
                    return


def _left(deadline):
    """Seconds until @deadline; TimeoutError once it passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("QEMU did not load the stream in time")
    return left


class Synthesis:
    """One client's synthesis, from its request line to its result."""

    def __init__(self, server, sock, owner, clock, request):
        """@clock: the client's, which read @request (its first line)."""
        self.server = server
        self.sock = sock
        self.owner = owner
        self.t = {"start": clock.start}
        self.clock = clock
        self.request = request
        self.vm = None
        self.record = None
        self.workdir = None
        # Early start: once the layout went out (the relay says so when
        # it stops), the client reads framed messages
        # (early_protocol.py), the last answer a note too; a
        # client that came back (resume) is answered on its new @sock,
        # whose handler waits until @answered.
        self.framed = False
        self.answered = threading.Event()

    def run(self):
        request = self.request
        header_raw = recv_exactly(self.clock, self.sock,
                                  overlay_file.HEADER_BYTES, "header")
        header = overlay_file.parse_header(header_raw)
        if header.stream_bytes > self.server.max_bytes:
            raise Refused(f"overlay of {header.stream_bytes} bytes exceeds "
                          f"this service's limit of {self.server.max_bytes}")
        raw = recv_exactly(self.clock, self.sock, header.description_bytes,
                           "description")
        description = overlay_file.parse_description(raw)
        early = overlay_file.early_start(description)
        if early:
            early.segments(header)      # OverlayError: refused, now
        base_id = description["base"]["id"]
        base_dir = self.server.bases().get(base_id)
        if not base_dir or not self.server.policy.may_use(
                self.owner, os.path.basename(base_dir)):
            # Which bases the cloudlet holds is not the client's business.
            raise Refused(f"unknown base {base_id}: this cloudlet does not "
                          f"hold it")
        check_machine(description, base_dir, request["forward"],
                      self.server.limits)
        try:
            verified = self.server.verified.check(base_dir, base_id)
        except BaseCheckFailed as e:
            raise Refused(f"this cloudlet cannot use base {base_id} now",
                          detail=str(e)) from None
        self.verified_id = base_id if verified else None
        if early:
            # Imported here: early_synthesis uses this module's names.
            from .early_synthesis import EarlyStart
            return EarlyStart(self, header_raw + raw, header, description,
                              base_dir, early).run()
        check = overlay_file.StreamCheck(header, raw)
        return self._launch(request, check, description, base_dir)

    def _launch(self, request, check, description, base_dir):
        header = check.header
        name = self.server.vm_name(request["name"])
        workdir = self.workdir = os.path.join(self.server.workdir, name)
        os.makedirs(workdir)
        ports = request["forward"]
        spool = Spool(os.path.join(workdir, "stream.spool"))
        receiver = threading.Thread(target=spool.receive,
                                    args=(self.clock, self.sock, check),
                                    daemon=True)
        receiver.start()
        self.t["launch"] = time.monotonic()
        # Known before it starts: abandon() stops a failed start too.
        self.vm = LaunchedVM(name, workdir, description, base_dir,
                             qemu=self.server.qemu, forwards=ports,
                             address=self.server.forward_address,
                             extra_args=self.server.qemu_args,
                             limits=self.server.limits,
                             verified_id=self.verified_id,
                             uids=self.server.uids,
                             cgroup=self.server.cgroup)
        self.vm.start()
        # Recorded at once: a service that ends now leaves no QEMU that a
        # restart would not find (and stop: it never finished loading).
        self.record = VMRecord.of(self.owner, self.vm, LOADING,
                                  self.server.forward_address)
        self.record.save()
        self.t["ready"] = time.monotonic()
        # One deadline for QEMU to take and load the stream: the client's
        # transfer deadline and LOAD_TIMEOUT_S after it.
        self.deadline = self.clock.end + LOAD_TIMEOUT_S
        try:
            self._feed(spool)
        except LaunchError:
            spool.cancelled = True      # one reader of the client at a time
            receiver.join()
            raise
        receiver.join()
        self.t["received"] = spool.done_at
        if spool.error:
            raise Refused(spool.error)
        self.vm.wait_loaded(max(0.0, self.deadline - time.monotonic()))
        self.t["loaded"] = time.monotonic()
        if not self.server.paused:
            self.vm.run()
        self.t["running"] = time.monotonic()
        self.vm.release_monitor()
        self.record.state = "paused" if self.server.paused else "running"
        self.record.save()
        # In the VM's directory, which its QEMU could have changed.
        remove_entry(os.path.dirname(spool.path),
                     os.path.basename(spool.path))
        return self._result(header, base_dir)

    def _feed(self, spool):
        """The stream to QEMU as it takes it: LaunchError if QEMU stalls
        (takes nothing for --client-timeout) or is not done by the
        synthesis's deadline."""
        stall = self.server.client_timeout
        with socket.socket(socket.AF_UNIX) as out:
            out.settimeout(stall)
            out.connect(self.vm.stream_path)
            try:
                spool.feed(out, stall, self.deadline)
            except TimeoutError as e:
                raise LaunchError(str(e)) from None
            except OSError:
                pass            # QEMU gave up: wait_loaded() says why

    def _result(self, header, base_dir):
        """What the client hears: its VM's name, address, forwarded ports
        and timings; host paths stay in the service's log."""
        t = self.t
        return {
            "ok": True, "vm": self.vm.name,
            "state": "paused" if self.server.paused else "running",
            "address": self.server.forward_address,
            "ports": {str(g): h for g, h in self.vm.ports.items()},
            "overlay-bytes": header.stream_bytes,
            "timings": {
                "transfer": round(t["received"] - t["start"], 3),
                "launch": round(t["ready"] - t["launch"], 3),
                "apply": round(t["loaded"] - t["received"], 3),
                "total": round(t["running"] - t["start"], 3)}}

    def abandon(self):
        """Stops what a refused synthesis started and removes its files
        and its record (which is not among them)."""
        if self.vm:
            self.vm.stop()
        if self.record:
            self.record.forget()
        self.vm = self.record = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class SynthesisServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, bases_dir, workdir, tls=None,
                 max_clients=4, max_vms=16, max_vms_per_client=4,
                 max_bytes=4 << 30, qemu=None, qemu_args=(),
                 forward_address="127.0.0.1", paused=False,
                 client_timeout=120, transfer_timeout=3600,
                 reconnect_timeout=60, log=print,
                 base_tool=TOOL, uids=None, cgroup=None,
                 max_vm_ram_mib=4096, max_vm_cpus=4, policy=None):
        """@tls: the ssl.SSLContext clients must pass (transport.py), or
        None for plaintext (the CLI allows it on loopback only).
        @policy: the ClientPolicy (serve --clients), or None: any client
        any base.
        @uids, @cgroup: the VMs' confinement (launcher.LaunchedVM)."""
        super().__init__(address, SynthesisHandler)
        self.tls = tls
        self.bases_dir = os.path.abspath(bases_dir)
        self.workdir = workdir
        self.max_clients = max_clients
        self.max_bytes = max_bytes
        self.qemu = qemu
        self.qemu_args = list(qemu_args)
        self.forward_address = forward_address
        self.paused = paused
        self.limits = Limits(max_ram_bytes=max_vm_ram_mib << 20,
                             max_cpus=max_vm_cpus)
        self.client_timeout = client_timeout
        # An early start's client that left may come back this long.
        self.reconnect_timeout = reconnect_timeout
        self.orphans = Orphans()
        self.transfer_timeout = transfer_timeout
        self.log = log
        self.uids, self.cgroup = uids, cgroup
        self.policy = policy or ClientPolicy()
        self.vms = VMLedger(max_vms, max_vms_per_client, self.policy,
                            log)
        self.verified = VerifiedBases(log, base_tool)
        self._syntheses = set()     # under way, for abandon_syntheses()
        # The VMs of the service's previous runs (registry.py).
        found = scan(workdir, log)
        for record in found:
            record.restore_relays(log, forward_address)
        self.vms.adopt(found)
        self._slots = threading.BoundedSemaphore(max_clients)
        # Every connection costs a thread until it is refused or served,
        # a handshake included: bounded too, not only syntheses.
        self.max_connections = CONNECTIONS_PER_SLOT * max_clients
        self._connections = threading.BoundedSemaphore(self.max_connections)
        # And per peer address, so that one host cannot hold them all.
        self.max_per_address = CONNECTIONS_PER_ADDRESS
        self._per_address = collections.Counter()
        self._per_address_lock = threading.Lock()

    def enter_address(self, address):
        with self._per_address_lock:
            if self._per_address[address] >= self.max_per_address:
                return False
            self._per_address[address] += 1
            return True

    def leave_address(self, address):
        with self._per_address_lock:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def bases(self):
        return find_bases(self.bases_dir)

    def vm_name(self, wanted):
        """The client's name for its VM, cut to what is safe in a path,
        and 64 random bits: no client can guess another's VM. Short, as
        its sockets' paths must fit a UNIX socket address (108 bytes)."""
        stem = "".join(c for c in str(wanted or "vm")
                       if c.isascii() and (c.isalnum() or c in "-_"))[:16]
        return f"{stem or 'vm'}-{secrets.token_urlsafe(8)}"

    def try_enter(self):
        return self._slots.acquire(blocking=False)

    def leave(self):
        self._slots.release()

    def abandon_syntheses(self):
        """Stops the VMs of the syntheses under way, which will not end
        now that the service does (their QEMU would wait for the rest of
        a stream for ever)."""
        for synthesis in self._syntheses.copy():     # atomic, as add()
            synthesis.abandon()

    def stop_vms(self):
        """Stops every VM of the service (serve --stop-vms-on-exit): their
        records go, their files stay."""
        for record in self.vms.take_all():
            record.stop()


class SynthesisHandler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server
        address = self.client_address[0]
        peer = f"{address}:{self.client_address[1]}"
        if not server.enter_address(address):
            server.log(f"synthesis from {peer}: refused, "
                       f"{server.max_per_address} connections from "
                       f"{address} are open")
            return
        try:
            if not server._connections.acquire(blocking=False):
                server.log(f"synthesis from {peer}: refused, "
                           f"{server.max_connections} connections are open")
                return
            try:
                self._handle(server, peer)
            finally:
                server._connections.release()
        finally:
            server.leave_address(address)

    def _handle(self, server, peer):
        if server.tls is not None:
            try:
                self.request.settimeout(min(HANDSHAKE_TIMEOUT_S,
                                            server.client_timeout))
                self.request = server.tls.wrap_socket(self.request,
                                                      server_side=True)
            except (OSError, ssl.SSLError) as e:
                server.log(f"synthesis from {peer}: refused, TLS: {e}")
                return
        # Whom the VMs and quotas count under: a certificate's name, or
        # (plaintext, loopback only) the peer's address.
        if server.tls is not None:
            owner = client_identity(self.request)
            if not owner:
                server.log(f"synthesis from {peer}: refused, TLS: its "
                           f"certificate names no client (no common name)")
                return
        else:
            owner = self.client_address[0]
        peer = f"{peer} ({owner})" if server.tls is not None else peer
        clock = ClientClock(server.client_timeout, server.transfer_timeout)
        # A client --clients does not name is told so before a byte of its
        # request is read: whatever it asks, list and stop of VMs it holds
        # from before it was struck off included (the operator stops
        # those: stop-all --owner).
        if not server.policy.admits(owner):
            server.log(f"request from {peer}: refused, not among --clients")
            self._answer({"ok": False, "error": "this service takes no "
                          "requests from you"})
            return
        # The request line within REQUEST_LINE_TIMEOUT_S (or the whole
        # transfer's time, if shorter).
        line_clock = clock if server.transfer_timeout <= \
            REQUEST_LINE_TIMEOUT_S else ClientClock(
                min(server.client_timeout, REQUEST_LINE_TIMEOUT_S),
                REQUEST_LINE_TIMEOUT_S, "the request line")
        try:
            request = recv_line(line_clock, self.request)
        except Refused as e:
            server.log(f"request from {peer}: refused: {e}")
            self._answer({"ok": False, "error": str(e)})
            return
        if request["op"] == "synthesize":
            self._synthesize(server, peer, owner, clock, request)
        elif request["op"] == "resume":
            self._resume(server, f"resume from {peer}", owner, request)
        else:
            self._manage(server, f"{request['op']} from {peer}", owner,
                         request)

    def _resume(self, server, who, owner, request):
        """An early-start synthesis whose client left, going on on this
        connection (early_resume.py): only its own client's; another's
        is answered as one that does not wait."""
        name = request["name"]
        released = threading.Event()
        early = server.orphans.take(owner, name, self.request, released)
        if early is None and server.orphans.completing(owner, name):
            cause = f"VM {name[:64]!r} has every segment in and completes " \
                f"on its first connection: list shows it once it runs"
        elif early is None:
            cause = server.orphans.cause(owner, name) or \
                f"no synthesis of VM {name[:64]!r} of yours waits to be " \
                f"resumed"
        if early is None:
            server.log(f"{who}: refused: {cause}")
            self._answer({"ok": False, "error": cause})
            return
        server.log(f"{who}: {name} goes on")
        # The synthesis answers on this connection, which stays open until
        # it did, or a later resume replaced it; bounded as the synthesis.
        until = early.s.clock.end + LOAD_TIMEOUT_S + 60
        while not released.wait(1.0) and not early.s.answered.is_set() \
                and time.monotonic() < until:
            pass

    def _manage(self, server, who, owner, request):
        """list and stop, of the client's own VMs only: another client's
        VM is answered as one that does not exist."""
        if request["op"] == "list":
            vms = [r.public() for r in server.vms.owned_by(owner)]
            server.log(f"{who}: {len(vms)} VM(s)")
            self._answer({"ok": True, "vms": vms})
            return
        name = request["name"]
        record = server.vms.take(owner, name)
        if record is None:
            server.log(f"{who}: refused, no VM {name!r} of theirs")
            self._answer({"ok": False, "error": f"no VM {name} of yours"})
            return
        try:
            record.stop()
        except Exception as e:          # noqa: B902 - the VM's files' doing
            server.log(f"{who}: {name}: clean-up failed: "
                       f"{type(e).__name__}: {e}")
            if record.alive():
                server.vms.adopt([record])  # still counted, still theirs
                self._answer({"ok": False, "error": f"VM {name} could not "
                              f"be stopped; the operator is told"})
                return
        shutil.rmtree(record.workdir, ignore_errors=True)
        server.log(f"{who}: {name} stopped, its files removed")
        self._answer({"ok": True, "vm": name, "state": "stopped"})

    def _synthesize(self, server, peer, owner, clock, request):
        peer = f"synthesis from {peer}"
        if not server.try_enter():
            server.log(f"{peer}: refused, busy")
            self._answer({"ok": False, "error":
                          f"busy: {server.max_clients} syntheses are "
                          f"running, the most this service takes; retry "
                          f"later"})
            return
        synthesis = Synthesis(server, self.request, owner, clock, request)
        try:
            self._run_synthesis(server, peer, owner, synthesis)
        finally:
            # A resumed connection's handler waits for this, whatever
            # happened here.
            synthesis.answered.set()

    def _abandon(self, server, peer, synthesis):
        """abandon(), whose clean-up of files QEMU owned may fail: logged,
        the client still hears its answer."""
        try:
            synthesis.abandon()
        except Exception:          # noqa: B902 - logged, not the client's
            server.log(f"{peer}: clean-up failed: {traceback.format_exc()}")

    def _run_synthesis(self, server, peer, owner, synthesis):
        server._syntheses.add(synthesis)
        refusal = reserved = None
        try:
            server.vms.reserve(owner)
            reserved = True
            result = synthesis.run()
        except (Refused, OverlayError, LaunchError, ConfinementError,
                OSError) as e:
            self._abandon(server, peer, synthesis)
            refusal = refused(e)
        except Exception:          # a bug of ours: the client still hears
            self._abandon(server, peer, synthesis)
            refusal = ({"ok": False, "error": "internal error of the "
                        "synthesis service"},
                       f"internal error: {traceback.format_exc()}")
        finally:
            # Free before the client hears, which may come back at once.
            if reserved:
                server.vms.settle(owner, None if refusal
                                  else synthesis.record)
            server._syntheses.discard(synthesis)
            server.leave()
        if refusal:
            # Logged first: answering lingers on the client a second.
            server.log(f"{peer}: {refusal[1]}")
            self._answer(refusal[0], synthesis.framed, synthesis.sock)
            return
        self._answer(result, synthesis.framed, synthesis.sock)
        server.log(f"{peer}: {result['vm']} {result['state']}, "
                   f"{result['overlay-bytes']} bytes, "
                   f"timings {json.dumps(result['timings'])}, "
                   f"ports {json.dumps(result['ports'])}, "
                   f"files in {synthesis.vm.workdir}")

    def _answer(self, message, framed=False, sock=None):
        """@message as a line, or @framed as early start's last note, on
        @sock (a resumed synthesis's) or this connection."""
        sock = sock or self.request
        try:
            if framed:
                sock.sendall(early_protocol.note(message))
            else:
                sock.sendall(json.dumps(message).encode() + b"\n")
            if not message["ok"]:
                self._drain(sock)
        except OSError:
            pass

    def _drain(self, sock):
        """After a refusal: a client still sending would get a reset that
        can discard the answer before it reads it, so what it sends is
        read and dropped until it hangs up, for a second and 8 MiB at
        most (ours stops sending as soon as the answer is there); then
        the connection is closed."""
        deadline = time.monotonic() + REFUSAL_LINGER_S
        left = REFUSAL_LINGER_BYTES
        while left > 0 and (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            data = sock.recv(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
