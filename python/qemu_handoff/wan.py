# SPDX-License-Identifier: GPL-2.0-or-later
"""An emulated WAN link between this host and a network namespace.

    host (source)                         namespace (destination)
    veth HOST_IF 10.213.X.1  ==tbf==>  veth NS_IF 10.213.X.2
                             <==tbf==        |
                                        DelayRelay (RELAY_PORT) --> 127.0.0.1:port
                                                                    (destination QEMU)

Rate: tc tbf on the egress of each end of a veth pair, so both directions
are shaped. RTT: this kernel has no netem, so a relay inside the namespace
holds every piece of data for half the RTT in each direction before passing
it on. The source connects to the relay; the relay connects to the
destination on the namespace's own loopback.

Everything is created by this module and removed by close(); names carry a
tag so that parallel links do not collide. Needs root (ip netns, tc).
"""

import array
import bisect
import ctypes
import fcntl
import os
import re
import socket
import subprocess
import threading
import time
from collections import deque


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    """Moves the calling thread into the network namespace open at fd
    (Python's own setns arrives only with 3.12; Debian 12 has 3.11)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def enter_namespace(name):
    """Moves the calling thread into the named namespace for good."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        setns(fd)
    finally:
        os.close(fd)


def run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


class Arrivals:
    """Bytes read from the source and when (wall clock): the last read
    exactly, earlier ones at most every STEP_S (a 45-minute move at 5
    Mbit/s reads about a million times), in arrays, not tuples."""

    STEP_S = 0.005

    def __init__(self):
        self._lock = threading.Lock()
        self._times, self._totals = array.array("d"), array.array("Q")
        self.last = None            # (time, bytes so far) of the last read

    def add(self, nbytes):
        with self._lock:
            now = time.time()
            total = (self.last[1] if self.last else 0) + nbytes
            if not self._times or now - self._times[-1] >= self.STEP_S:
                self._times.append(now)
                self._totals.append(total)
            self.last = (now, total)

    def bytes_by(self, t):
        """Bytes read by wall-clock time @t (to STEP_S)."""
        with self._lock:
            if self.last and self.last[0] <= t:
                return self.last[1]
            i = bisect.bisect_right(self._times, t)
            return self._totals[i - 1] if i else 0


class DelayRelay:
    """TCP relay holding data for `delay` seconds in each direction.

    Runs in threads of this process. In a WanLink its listening socket and
    its connections to the target live in the link's namespace. Tests of
    failures use it on loopback too: `tamper(offset, data)` may rewrite what
    goes to the destination (offset: of @data in what the source sent; it
    may return fewer bytes, or none, to hold back or drop), and cut() drops
    every connection at once."""

    def __init__(self, listen_sock, target_port, delay, tamper=None):
        self.listen_sock = listen_sock
        self.target_port = target_port
        self.delay = delay
        self.tamper = tamper
        self.netns_fd = None
        self._stop = threading.Event()
        self._threads = []
        self._conns = []
        self.bytes_forwarded = [0, 0]  # to destination, to source
        # When the stream crossed the link, over all connections, to set
        # beside QMP's event times (wall clock too): Arrivals.
        self.arrivals = Arrivals()

    def start(self, netns_fd=None):
        self.netns_fd = netns_fd
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        if self.netns_fd is not None:
            setns(self.netns_fd)
        self.listen_sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listen_sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1",
                                                   self.target_port))
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns += [client, server]
            gone = threading.Event()    # the destination stopped reading
            self._pipe(client, server, 0, gone)
            self._pipe(server, client, 1, gone)

    def _pipe(self, src, dst, direction, gone):
        """Reader and writer threads with a timestamped queue between them,
        so the delay adds latency without limiting throughput.

        When the destination goes away (closes, crashes, resets), what it
        sent before going is still delivered to the source, then the source
        sees the connection reset: the order a real network keeps, and the
        one a destination's last words (an error on the return path) need."""
        queue = deque()
        ready = threading.Condition()

        def reader():
            offset = 0
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if data and direction == 0 and self.tamper:
                    received = len(data)
                    data = self.tamper(offset, data)
                    offset += received
                    if not data:
                        continue        # held back or dropped: not an EOF
                else:
                    offset += len(data)
                if data and direction == 0:
                    self.arrivals.add(len(data))
                if data and direction == 0 and gone.is_set():
                    continue            # nobody reads it any more
                with ready:
                    queue.append((time.monotonic() + self.delay, data))
                    ready.notify()
                if not data:
                    return

        def writer():
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, data = queue.popleft()
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if not data:
                    try:
                        if direction == 1 and gone.is_set():
                            _reset(dst)
                        else:
                            dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                    self.bytes_forwarded[direction] += len(data)
                except OSError:
                    if direction == 0:
                        gone.set()
                        continue        # drain the queue, deliver nothing
                    return

        for fn in (reader, writer):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)

    def cut(self):
        """Drops every connection with a reset, as a dead link would."""
        for c in self._conns:
            try:
                _reset(c)
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self.listen_sock.close()


def _reset(sock):
    """Closes `sock` with a TCP reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
    # shutdown wakes the relay's own threads blocked on it.
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def loopback_relay(target_port, delay=0.0, tamper=None):
    """A DelayRelay on 127.0.0.1 in this namespace; returns it and its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    relay = DelayRelay(sock, target_port, delay, tamper)
    relay.start()
    return relay, sock.getsockname()[1]


# Held while a link picks its subnet and creates its interfaces, so that
# two processes (a CI run and a benchmark, say) never pick the same one.
SUBNET_LOCK = "/run/lock/qemu-handoff-wan.lock"


def free_subnet(preferred):
    """X of a 10.213.X.0/30 no interface of this namespace has, from
    @preferred on. A subnet in use twice routes the source's packets to
    whichever link the kernel picks: a CI run once connected to a stale
    namespace left by a killed run and was refused."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True,
                         text=True, check=True).stdout
    used = {int(x) for x in re.findall(r"\b10\.213\.(\d+)\.", out)}
    for i in range(250):
        subnet = (preferred - 1 + i) % 250 + 1
        if subnet not in used:
            return subnet
    raise RuntimeError("no free 10.213.X.0/30 subnet for a WAN link: "
                       "stale qh-wan-* namespaces? (ip netns list)")


class WanLink:
    """A shaped, delayed link into a fresh network namespace."""

    def __init__(self, rate_mbit, rtt_ms=50, tag=None):
        self.tag = tag or f"{os.getpid() % 100000}"
        self.netns = f"qh-wan-{self.tag}"
        self.host_if = f"qhw{self.tag}h"[:15]
        self.ns_if = f"qhw{self.tag}n"[:15]
        self.rate_mbit = rate_mbit
        self.rtt_ms = rtt_ms
        self.relays = []
        self._netns_fd = None
        with open(SUBNET_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subnet = free_subnet((os.getpid() % 250) + 1)
            self.host_addr = f"10.213.{subnet}.1"
            self.ns_addr = f"10.213.{subnet}.2"
            self._create()

    def _create(self):
        # close() deletes only what this link made: a name taken already
        # (a pid reused modulo 100000, a tag given twice) is another's.
        self._made_netns = self._made_link = False
        run("ip", "netns", "add", self.netns)
        self._made_netns = True
        try:
            run("ip", "link", "add", self.host_if, "type", "veth",
                "peer", "name", self.ns_if)
            self._made_link = True
            run("ip", "link", "set", self.ns_if, "netns", self.netns)
            run("ip", "addr", "add", f"{self.host_addr}/30", "dev",
                self.host_if)
            run("ip", "link", "set", self.host_if, "up")
            self._ns("ip", "addr", "add", f"{self.ns_addr}/30", "dev",
                     self.ns_if)
            self._ns("ip", "link", "set", self.ns_if, "up")
            self._ns("ip", "link", "set", "lo", "up")
            self._netns_fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
            self.set_rate(self.rate_mbit, add=True)
        except Exception:
            self.close()
            raise

    def _ns(self, *cmd):
        return run("ip", "netns", "exec", self.netns, *cmd)

    def ns_command(self, argv):
        """argv prefixed to run inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def set_rate(self, rate_mbit, add=False):
        """(Re)shapes both directions to rate_mbit.

        A new rate gets a new tbf: `tc qdisc change` from 35 down to 5 Mbit/s
        left this kernel's tbf with packets it never dequeued again (backlog
        stuck, overlimits climbing, TCP in exponential backoff for minutes).
        Replacing the qdisc drops what it held (up to ~100 ms of data), as a
        router reconfigured mid-flow would; TCP resends it."""
        rate_bytes = rate_mbit * 1e6 / 8
        burst = max(16 * 1024, int(rate_bytes * 0.004))
        # Queue up to ~100 ms of data before tbf drops, like a modest router.
        limit = int(rate_bytes * 0.1) + burst
        tbf = ["root", "tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst),
               "limit", str(limit)]
        for ns, dev in ((False, self.host_if), (True, self.ns_if)):
            tc = self._ns if ns else run
            if not add:
                tc("tc", "qdisc", "del", "dev", dev, "root")
            tc("tc", "qdisc", "add", "dev", dev, *tbf)
        self.rate_mbit = rate_mbit

    def relay_to(self, target_port, listen_port=0):
        """Starts a delay relay in the namespace forwarding to
        127.0.0.1:target_port there; returns the (addr, port) the source
        side connects to: @listen_port, or one the kernel picks."""
        host_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            setns(self._netns_fd)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ns_addr, listen_port))
            sock.listen(8)
        finally:
            setns(host_ns)
            os.close(host_ns)
        relay = DelayRelay(sock, target_port, self.rtt_ms / 2000.0)
        relay.start(self._netns_fd)
        self.relays.append(relay)
        return self.ns_addr, sock.getsockname()[1]

    def close(self):
        for relay in self.relays:
            relay.stop()
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None
        if getattr(self, "_made_link", False):
            subprocess.run(["ip", "link", "del", self.host_if],
                           capture_output=True)
        if getattr(self, "_made_netns", False):
            subprocess.run(["ip", "netns", "del", self.netns],
                           capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
