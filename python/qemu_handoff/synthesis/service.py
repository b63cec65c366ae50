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
"""

import json
import os
import shutil
import socket
import socketserver
import threading
import time
import traceback

from ..formats import manifest
from ..formats import overlay as overlay_file
from .launcher import LaunchedVM, LaunchError
from ..formats.overlay import OverlayError

REQUEST_MAX = 4096
MAX_FORWARDS = 16             # ports one VM may have forwarded
CHUNK = 1 << 20


class Refused(Exception):
    """A synthesis refused, with the reason sent to the client."""


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


def recv_exactly(sock, n, what):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise Refused(f"overlay truncated in its {what}")
        data += chunk
    return data


def recv_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise Refused("connection closed before the request line")
        data += chunk
        if len(data) > REQUEST_MAX:
            raise Refused("request line too long")
    try:
        request = json.loads(data)
    except ValueError:
        raise Refused("request line is not JSON") from None
    return parse_request(request)


def parse_request(request):
    """The request line's fields, checked: {"name": str or None,
    "forward": [TCP ports]}."""
    if not isinstance(request, dict):
        raise Refused("request line is not a JSON object")
    unknown = sorted(set(request) - {"name", "forward"})
    if unknown:
        raise Refused(f"request line has unknown field {unknown[0]!r}")
    name = request.get("name")
    if name is not None and not isinstance(name, str):
        raise Refused("request line's name is not a string")
    forward = request.get("forward", [])
    if not isinstance(forward, list) or len(forward) > MAX_FORWARDS or \
            not all(type(p) is int and 0 < p < 65536 for p in forward):
        raise Refused(f"request line's forward is not a list of at most "
                      f"{MAX_FORWARDS} TCP ports")
    return {"name": name, "forward": forward}


def stalled(sock):
    return (f"the client sent nothing for {sock.gettimeout():.0f} s: "
            f"synthesis abandoned")


class Spool:
    """Stream bytes kept on disk as they arrive, read back at QEMU's pace:
    the transfer does not wait for QEMU to start, nor QEMU for the end."""

    def __init__(self, path):
        self.path = path
        self._writer = open(path, "wb")
        self._cond = threading.Condition()
        self.written = 0
        self.done = False
        self.done_at = None     # when the last byte came in (or the end)
        self.error = None

    def receive(self, sock, check):
        try:
            while check.bytes < check.header.stream_bytes:
                data = sock.recv(min(CHUNK, check.header.stream_bytes
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
        except TimeoutError:
            self.error = stalled(sock)
        except (OSError, OverlayError) as e:
            self.error = str(e)
        finally:
            self.done_at = time.monotonic()
            self._writer.close()
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def feed(self, out):
        """Copies everything received into @out until the end (or an
        error: then stops, the stream being incomplete)."""
        offset = 0
        with open(self.path, "rb") as f:
            while True:
                with self._cond:
                    while self.written == offset and not self.done:
                        self._cond.wait()
                    end, done = self.written, self.done
                while offset < end:
                    data = f.read(min(CHUNK, end - offset))
                    out.sendall(data)
                    offset += len(data)
                if done and offset == self.written:
                    return


class Synthesis:
    """One client's synthesis, from its request line to its result."""

    def __init__(self, server, sock, peer):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.t = {"start": time.monotonic()}
        self.vm = None
        self.workdir = None

    def run(self):
        request = recv_line(self.sock)
        header = overlay_file.parse_header(
            recv_exactly(self.sock, overlay_file.HEADER_BYTES, "header"))
        if header.stream_bytes > self.server.max_bytes:
            raise Refused(f"overlay of {header.stream_bytes} bytes exceeds "
                          f"this service's limit of {self.server.max_bytes}")
        raw = recv_exactly(self.sock, header.description_bytes,
                           "description")
        description = overlay_file.parse_description(raw)
        base_id = description["base"]["id"]
        base_dir = self.server.bases().get(base_id)
        if not base_dir:
            raise Refused(f"unknown base {base_id}: this cloudlet holds "
                          f"{', '.join(self.server.bases()) or 'none'}")
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
                                    args=(self.sock, check), daemon=True)
        receiver.start()
        self.t["launch"] = time.monotonic()
        self.vm = LaunchedVM(name, workdir, description, base_dir,
                             qemu=self.server.qemu, forwards=ports,
                             address=self.server.forward_address,
                             extra_args=self.server.qemu_args,
                             host_files=self.server.host_files).start()
        self.t["ready"] = time.monotonic()
        self._feed(spool)
        receiver.join()
        self.t["received"] = spool.done_at
        if spool.error:
            raise Refused(spool.error)
        self.vm.wait_loaded()
        self.t["loaded"] = time.monotonic()
        if not self.server.paused:
            self.vm.run()
        self.t["running"] = time.monotonic()
        self.vm.release_monitor()
        os.unlink(spool.path)
        return self._result(header, base_dir)

    def _feed(self, spool):
        with socket.socket(socket.AF_UNIX) as out:
            out.connect(self.vm.stream_path)
            try:
                spool.feed(out)
            except OSError:
                pass            # QEMU gave up: wait_loaded() says why

    def _result(self, header, base_dir):
        t = self.t
        return {
            "ok": True, "vm": self.vm.name,
            "state": "paused" if self.server.paused else "running",
            "address": self.server.forward_address,
            "ports": {str(g): h for g, h in self.vm.ports.items()},
            "base": base_dir, "overlay-bytes": header.stream_bytes,
            "workdir": self.vm.workdir, "qmp": self.vm.qmp_path,
            "console": self.vm.console_path,
            "timings": {
                "transfer": round(t["received"] - t["start"], 3),
                "launch": round(t["ready"] - t["launch"], 3),
                "apply": round(t["loaded"] - t["received"], 3),
                "total": round(t["running"] - t["start"], 3)}}

    def abandon(self):
        """Stops what a refused synthesis started and removes its files."""
        if self.vm:
            self.vm.stop()
            self.vm = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class SynthesisServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, bases_dir, workdir, max_clients=4,
                 max_bytes=4 << 30, qemu=None, qemu_args=(),
                 forward_address="127.0.0.1", host_files=(), paused=False,
                 client_timeout=120, log=print):
        super().__init__(address, SynthesisHandler)
        self.bases_dir = os.path.abspath(bases_dir)
        self.workdir = workdir
        self.max_clients = max_clients
        self.max_bytes = max_bytes
        self.qemu = qemu
        self.qemu_args = list(qemu_args)
        self.forward_address = forward_address
        self.host_files = list(host_files)
        self.paused = paused
        self.client_timeout = client_timeout
        self.log = log
        self.vms = []
        self._slots = threading.BoundedSemaphore(max_clients)
        self._lock = threading.Lock()
        self._serial = 0

    def bases(self):
        return find_bases(self.bases_dir)

    def vm_name(self, wanted):
        with self._lock:
            self._serial += 1
            stem = "".join(c for c in str(wanted or "vm")
                           if c.isalnum() or c in "-_")[:32] or "vm"
            return f"{stem}-{os.getpid()}-{self._serial}"

    def try_enter(self):
        return self._slots.acquire(blocking=False)

    def leave(self):
        self._slots.release()

    def stop_vms(self):
        with self._lock:
            vms, self.vms = self.vms, []
        for vm in vms:
            vm.stop()


class SynthesisHandler(socketserver.BaseRequestHandler):
    def handle(self):
        server, sock = self.server, self.request
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        if not server.try_enter():
            self._answer({"ok": False, "error":
                          f"busy: {server.max_clients} syntheses are "
                          f"running, the most this service takes; retry "
                          f"later"})
            server.log(f"synthesis from {peer}: refused, busy")
            return
        # A client that stops sending must not hold its slot for ever.
        sock.settimeout(server.client_timeout)
        synthesis = Synthesis(server, sock, peer)
        refusal = None
        try:
            result = synthesis.run()
        except (Refused, OverlayError, LaunchError, OSError) as e:
            cause = stalled(sock) if isinstance(e, TimeoutError) else str(e)
            synthesis.abandon()
            refusal = ({"ok": False, "error": cause}, f"refused: {cause}")
        except Exception as e:     # a bug of ours: the client still hears
            synthesis.abandon()
            refusal = ({"ok": False, "error": f"internal error of the "
                        f"synthesis service: {e!r}"},
                       f"internal error: {traceback.format_exc()}")
        finally:
            # Free before the client hears, which may come back at once.
            server.leave()
        if refusal:
            self._answer(refusal[0])
            server.log(f"synthesis from {peer}: {refusal[1]}")
            return
        with server._lock:
            server.vms.append(synthesis.vm)
        self._answer(result)
        server.log(f"synthesis from {peer}: {result['vm']} {result['state']}, "
                   f"{result['overlay-bytes']} bytes, "
                   f"timings {json.dumps(result['timings'])}, "
                   f"ports {json.dumps(result['ports'])}")

    def _answer(self, message):
        try:
            self.request.sendall(json.dumps(message).encode() + b"\n")
            if not message["ok"]:
                self._drain()
        except OSError:
            pass

    def _drain(self):
        """After a refusal: a client still sending would get a reset that
        can discard the answer before it reads it, so the rest of what it
        sends is read and dropped until it hangs up (or 10 s pass)."""
        self.request.shutdown(socket.SHUT_WR)
        self.request.settimeout(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.request.recv(CHUNK):
            pass
