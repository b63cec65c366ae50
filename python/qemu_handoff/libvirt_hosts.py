# SPDX-License-Identifier: GPL-2.0-or-later
"""Two libvirt hosts on one machine, for `virsh migrate --handoff`.

libvirt refuses to migrate to its own host UUID, and a daemon's state
(domains, QEMU pid files, sockets, logs) lives at paths compiled into it.
So each LibvirtHost is the fork's libvirtd (scripts/build-libvirt.sh) run in
a mount namespace of its own, in which the installed tree's configuration,
run, state, cache and log directories are bind mounts of the host's own
directory, with its own host_uuid. Optionally it runs in a network
namespace (the far end of a WanLink). Nothing outside the test's directory
and the namespaces is touched; stop() destroys the host's domains and ends
the daemon.

A domain's files (overlay, serial log, console and gdbstub sockets, RAM
dumps) live in STATE/images, the same path in every host's namespace and a
different directory outside, which is how one domain XML serves both ends
of a migration: the test reads them at host.images.

    host.root/etc    -> PREFIX/etc/libvirt        libvirtd.conf, qemu.conf
    host.root/run    -> PREFIX/var/run/libvirt    libvirt-sock, qemu/*.pid
    host.root/lib    -> PREFIX/var/lib/libvirt    images/
    host.root/cache  -> PREFIX/var/cache/libvirt
    host.root/log    -> PREFIX/var/log/libvirt    libvirtd.log, qemu/NAME.log
"""

import json
import os
import re
import signal
import subprocess
import time
import uuid
from xml.sax.saxutils import escape, quoteattr

from .bases import overlay_on, run_workload, save_base
from .identity import assert_goes_on, assert_same_disk
from .guest import (BUILD, FIRMWARE_DIRS, QEMU, GuestVM, create_overlay,
                    free_tcp_port, test_guest)

PREFIX = os.path.join(BUILD, "libvirt", "prefix")
LIBVIRTD = os.path.join(PREFIX, "sbin", "libvirtd")
VIRSH = os.path.join(PREFIX, "bin", "virsh")
# Directory -> where it is mounted in the host's namespace.
MOUNTS = {
    "etc": os.path.join(PREFIX, "etc", "libvirt"),
    "run": os.path.join(PREFIX, "var", "run", "libvirt"),
    "lib": os.path.join(PREFIX, "var", "lib", "libvirt"),
    "cache": os.path.join(PREFIX, "var", "cache", "libvirt"),
    "log": os.path.join(PREFIX, "var", "log", "libvirt"),
}
# Inside every host's namespace: the domain files' directory.
IMAGES = os.path.join(MOUNTS["lib"], "images")


class VirshError(RuntimeError):
    def __init__(self, args, result):
        self.stderr = result.stderr.strip()
        super().__init__(f"virsh {' '.join(args)}: {self.stderr}")


def built():
    return os.access(LIBVIRTD, os.X_OK) and os.access(VIRSH, os.X_OK)


class LibvirtHost:
    """One libvirtd of the fork that believes it is a host of its own."""

    def __init__(self, root, name, netns=None, tls_dir=None, binds=None):
        """@binds: {path: directory} this host sees at path instead (e.g.
        another base at the path the source's base has)."""
        self.root = str(root)
        self.name = name
        self.netns = netns
        self.uuid = str(uuid.uuid4())
        self.images = os.path.join(self.root, "lib", "images")
        self.socket = os.path.join(self.root, "run", "libvirt-sock")
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self.log_path = os.path.join(self.root, "log", "libvirtd.log")
        self.tls_dir = tls_dir
        self.binds = dict(binds or {})
        self.proc = None

    def _write_config(self):
        for d in MOUNTS:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.makedirs(self.images, exist_ok=True)
        with open(os.path.join(self.root, "etc", "libvirtd.conf"), "w") as f:
            f.write(f'host_uuid = "{self.uuid}"\n'
                    'auth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                    'unix_sock_rw_perms = "0700"\n'
                    # The monitor traffic and migration steps, for failures.
                    'log_level = 3\n'
                    'log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_migration"\n'
                    f'log_outputs = "1:file:{MOUNTS["log"]}/libvirtd.log"\n')
        # QEMU as root, unconfined: both hosts share one machine and user.
        with open(os.path.join(self.root, "etc", "qemu.conf"), "w") as f:
            f.write('user = "root"\ngroup = "root"\n'
                    'dynamic_ownership = 0\nremember_owner = 0\n'
                    'security_driver = "none"\n'
                    'cgroup_controllers = [ ]\nnamespaces = [ ]\n'
                    'stdio_handler = "file"\n')
            if self.tls_dir:
                f.write(f'migrate_tls_x509_cert_dir = "{self.tls_dir}"\n'
                        'migrate_tls_x509_verify = 1\n')

    def start(self, timeout=60.0):
        self._write_config()
        for target in MOUNTS.values():
            os.makedirs(target, exist_ok=True)
        mounts = [(os.path.join(self.root, d), target)
                  for d, target in MOUNTS.items()]
        mounts += [(source, path) for path, source in self.binds.items()]
        binds = " && ".join(f"mount --bind {source} {target}"
                            for source, target in mounts)
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", f"{binds} && exec {LIBVIRTD} --pid-file "
                f"{os.path.join(MOUNTS['run'], 'libvirtd.pid')}"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self._stderr = open(os.path.join(self.root, "libvirtd.stderr"), "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"libvirtd of {self.name} exited "
                                   f"({self.proc.returncode}): "
                                   f"{self._daemon_output()}")
            if os.path.exists(self.socket):
                try:
                    # (`version` would want a default emulator on PATH.)
                    self.virsh("uri")
                    return self
                except VirshError:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"libvirtd of {self.name} did not answer "
                                   f"in {timeout:.0f} s: "
                                   f"{self._daemon_output()}")
            time.sleep(0.2)

    def _daemon_output(self):
        with open(os.path.join(self.root, "libvirtd.stderr"),
                  errors="replace") as f:
            return f.read()[-2000:]

    def read_log(self):
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def virsh(self, *args, check=True, timeout=300):
        argv = [VIRSH, "-q", "-c", self.uri, *args]
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise VirshError(args, r)
        return r

    def virsh_background(self, *args):
        """virsh running on; communicate() gives its output."""
        return subprocess.Popen([VIRSH, "-q", "-c", self.uri, *args],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def job_data_processed(self, domain):
        """Bytes `virsh domjobinfo` says the running job has processed, or
        None when no job runs."""
        out = self.virsh("domjobinfo", domain, check=False).stdout
        m = re.search(r"Data processed:\s+([\d.]+) (B|KiB|MiB|GiB)", out)
        if "Unbounded" not in out or not m:
            return None
        unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
        return float(m.group(1)) * unit[m.group(2)]

    def job_completed_ms(self, domain):
        """The last finished job's "Time elapsed" (QEMU's total-time for a
        migration), in ms."""
        out = self.virsh("domjobinfo", "--completed", domain).stdout
        return int(re.search(r"Time elapsed:\s+(\d+)\s+ms", out).group(1))

    def qemu_pid(self, domain):
        with open(os.path.join(self.root, "run", "qemu",
                               f"{domain}.pid")) as f:
            return int(f.read().strip())

    def qmp(self, command, **arguments):
        """A QMP command to a domain's QEMU, through libvirt."""
        domain = arguments.pop("domain")
        timeout = arguments.pop("virsh_timeout", 300)
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        out = self.virsh("qemu-monitor-command", domain, json.dumps(msg),
                         timeout=timeout)
        reply = json.loads(out.stdout)
        if "error" in reply:
            raise RuntimeError(f"{command}: {reply['error']['desc']}")
        return reply["return"]

    def domains(self):
        out = self.virsh("list", "--all", "--name").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def stop(self):
        if self.proc is None:
            return
        try:
            for dom in self.domains():
                self.virsh("destroy", dom, check=False)
        except Exception:
            pass
        # A QEMU left behind by a failed start still belongs to us.
        qemu_run = os.path.join(self.root, "run", "qemu")
        for pidfile in (os.listdir(qemu_run) if os.path.isdir(qemu_run)
                        else []):
            if pidfile.endswith(".pid"):
                try:
                    with open(os.path.join(qemu_run, pidfile)) as f:
                        os.kill(int(f.read().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
        self.proc = None


def domain_xml(name, disk_file, guest=None, workload="none", gdb=True,
               emulator=QEMU, resume_from=None):
    """The test guest as a libvirt domain: a TCG VM booting the guest's
    kernel, its disk an overlay on the base disk (virtio, discard=unmap),
    its console a socket logged to a file, and a gdbstub for the identity
    check's negative control. Paths are those of every host's namespace.
    @emulator: the fork's QEMU unless a test wants another. @resume_from:
    a base directory the VM starts from (-handoff base=DIR,resume=on, which
    QEMU ignores on the destination of a migration) instead of booting."""
    guest = guest or test_guest()
    console = os.path.join(IMAGES, f"{name}.console")
    serial = os.path.join(IMAGES, f"{name}.serial")
    # QEMU run from its build tree looks for firmware in the tree's bundle
    # directory, not in its configured path: name Debian's directories.
    args = [a for d in FIRMWARE_DIRS for a in ("-L", d)]
    if gdb:
        gdb_path = os.path.join(IMAGES, f"{name}.gdb")
        args += ["-gdb", f"unix:{gdb_path},server=on,wait=off"]
    if resume_from:
        args += ["-handoff", f"base={resume_from},resume=on"]
    extra = "".join(f"<qemu:arg value={quoteattr(a)}/>" for a in args)
    cmdline = escape(f"{guest.append} handoff.workload={workload}")
    return f"""<domain type='qemu'
        xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{guest.mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(guest.kernel)}</kernel>
    <initrd>{escape(guest.initrd)}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>
      <source file={quoteattr(os.path.join(IMAGES, disk_file))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='unix'>
      <source mode='bind' path={quoteattr(console)}/>
      <log file={quoteattr(serial)}/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>{extra}</qemu:commandline>
</domain>
"""


class _DomainProcess:
    """What GuestVM needs of a process, for a domain's QEMU: alive or not,
    from the pid file libvirt keeps."""

    def __init__(self, host, name):
        self.pidfile = os.path.join(host.root, "run", "qemu", f"{name}.pid")
        self.returncode = None

    def poll(self):
        try:
            with open(self.pidfile) as f:
                os.kill(int(f.read().strip()), 0)
            return None
        except (OSError, ValueError):
            self.returncode = -1
            return self.returncode


class _DomainMonitor:
    """GuestVM's qmp, through libvirt's qemu-monitor-command."""

    def __init__(self, host, name):
        self.host = host
        self.name = name

    def cmd(self, command, **arguments):
        return self.host.qmp(command, domain=self.name, **arguments)

    def slow_cmd(self, seconds, command, **arguments):
        """QMPClient.slow_cmd's: waits up to @seconds for the answer."""
        return self.host.qmp(command, domain=self.name,
                             virsh_timeout=seconds, **arguments)

    def close(self):
        pass


class LibvirtGuest(GuestVM):
    """A domain of a LibvirtHost seen as a GuestVM: serial console, shell,
    heartbeats, QMP, RAM dumps and the gdbstub, at the host's paths."""

    def __init__(self, host, name, disk_file="disk.qcow2"):
        self.host = host
        self.name = name
        self.workdir = host.images
        self.guest = test_guest()
        self.disk = os.path.join(host.images, disk_file)
        self.serial_path = os.path.join(host.images, f"{name}.serial")
        self.console_path = os.path.join(host.images, f"{name}.console")
        self.gdb_path = os.path.join(host.images, f"{name}.gdb")
        self.log_path = os.path.join(host.root, "log", "qemu", f"{name}.log")
        self.proc = _DomainProcess(host, name)
        self.qmp = _DomainMonitor(host, name)

    def start(self):
        raise NotImplementedError("domains start with virsh")

    # ram_digest() is GuestVM's: QEMU writes the dump to self.workdir, a
    # real directory that the host's namespace sees at the same path too.

    def stop(self):
        self.host.virsh("destroy", self.name, check=False)


def create_base(workdir, base_dir):
    """Saves a base in @base_dir from a domain booting the test guest, on a
    host of its own (under @workdir): user domains with the same definition
    (domain_xml) resume from it, since libvirt places their devices as it
    placed the base VM's."""
    host = LibvirtHost(os.path.join(str(workdir), "base-host"), "base-host")
    try:
        host.start()
        create_overlay(os.path.join(host.images, "base-vm.qcow2"))
        xml = os.path.join(host.root, "base-vm.xml")
        with open(xml, "w") as f:
            f.write(domain_xml("base-vm", "base-vm.qcow2"))
        host.virsh("create", xml)
        save_base(LibvirtGuest(host, "base-vm", "base-vm.qcow2"), base_dir)
    finally:
        host.stop()
    return str(base_dir)


DOMAIN = "alice"


def start_domain(host, base, workdir, resume=True, **xml_options):
    """Starts the test guest as domain DOMAIN on @host, on a fresh overlay
    of the base's disk: resumed from the base as a cloudlet starts a user
    VM, or with resume=False booted; waits until the guest runs."""
    overlay_on(base, os.path.join(host.images, "disk.qcow2"))
    xml = os.path.join(str(workdir), f"{DOMAIN}.xml")
    with open(xml, "w") as f:
        f.write(domain_xml(DOMAIN, "disk.qcow2",
                           resume_from=base if resume else None,
                           **xml_options))
    host.virsh("create", xml)
    guest = LibvirtGuest(host, DOMAIN)
    if resume:
        guest.wait_serial(r"^heartbeat \d+\r?$", timeout=60)
    else:
        guest.wait_serial(r"handoff-guest: ready", timeout=300)
    return guest


def stock_definition(host):
    """DOMAIN's definition on @host without -handoff: a destination that
    waits for a plain migration (virsh migrate --xml)."""
    definition = host.virsh("dumpxml", "--migratable", DOMAIN).stdout
    return re.sub(r"<qemu:arg value=.-handoff./>\s*"
                  r"<qemu:arg value=.base=[^>]*/>", "", definition)


def move_over_wan(workdir, base, link, src_host, dst_host, method,
                  workload="mixed", log=lambda line: None):
    """One move of a fresh guest (resumed from @base, after @workload)
    from @src_host to @dst_host, which runs in @link's namespace, through
    the link's relays (migration and NBD ports alike). @method: "handoff"
    or "copy-storage-inc" (libvirt's stock way for a VM on local disks:
    NBD for the disk, QEMU's precopy for RAM). Checks that the guest goes
    on at the destination with the source's disk (AssertionError if not),
    destroys it there, and returns {"seconds": virsh's, "bytes": sent to
    the destination, "qemu_seconds": the job's time elapsed}."""
    src = start_domain(src_host, base, workdir)
    run_workload(src, workload)
    overlay_on(base, os.path.join(dst_host.images, "disk.qcow2"))
    port, nbd_port = free_tcp_port(), free_tcp_port()
    relays = len(link.relays)
    addr, _ = link.relay_to(port, listen_port=port)
    link.relay_to(nbd_port, listen_port=nbd_port)
    if method == "handoff":
        options = ["--handoff", "--handoff-base", base]
    else:
        xml = os.path.join(str(workdir), "stock-dst.xml")
        with open(xml, "w") as f:
            f.write(stock_definition(src_host))
        options = ["--copy-storage-inc", "--disks-port", str(nbd_port),
                   "--xml", xml]
    # QEMU there listens on the namespace's loopback, behind the relays
    # (qemu.conf refuses a loopback migration_address; the option is fine).
    argv = ["migrate", "--live", "--listen-address", "127.0.0.1", *options,
            DOMAIN, dst_host.uri, f"tcp://{addr}:{port}"]
    # libvirt probes a QEMU binary's capabilities the first time a host
    # uses it: done before the clock starts, as on a cloudlet in service.
    dst_host.virsh("domcapabilities", "--emulatorbin", QEMU,
                   "--virttype", "qemu")
    log("virsh -c " + src_host.uri + " " + " ".join(argv))
    start = time.monotonic()
    src_host.virsh(*argv, timeout=900)
    seconds = time.monotonic() - start
    sent = sum(r.bytes_forwarded[0] for r in link.relays[relays:])
    qemu_ms = dst_host.job_completed_ms(DOMAIN)
    assert_moved(src, LibvirtGuest(dst_host, DOMAIN))
    dst_host.virsh("destroy", DOMAIN)
    return {"seconds": seconds, "bytes": sent, "qemu_seconds": qemu_ms / 1e3}


def assert_moved(src, dst):
    """@dst, the domain just arrived running on its host, goes on where
    @src stopped and holds the disk @src left (compared with @dst
    suspended, its disks flushed); @dst stays suspended."""
    assert_goes_on(dst, max(src.heartbeats()))
    dst.host.virsh("suspend", dst.name)
    # `stop` on a paused VM still flushes its disks (qcow2 metadata too).
    dst.qmp.cmd("stop")
    assert_same_disk(src.disk, dst.disk)
