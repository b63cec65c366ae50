# SPDX-License-Identifier: GPL-2.0-or-later
"""handoff-synthesis: VM overlays turned into running VMs at a cloudlet.

See `scripts/handoff-synthesis.py --help` and docs/synthesis.md; the code
is in qemu_handoff.synthesis.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading

from ..formats import overlay as overlay_file
from .client import SynthesisFailed, manage, synthesize
from .client_policy import ClientPolicy, ClientPolicyError
from .confinement import (DEFAULT_FIRST_UID, DEFAULT_UIDS, Cgroup,
                          ConfinementError, UidPool, check_range)
from .create import CreateError, create_overlay
from .launcher import DEFAULT_QEMU, LaunchedVM, LaunchError
from .record import RecordError, record_working_set
from ..formats.overlay import OverlayError
from .registry import scan
from .service import SynthesisServer
from .transport import (TransportError, client_context, is_loopback,
                        server_context)

DESCRIPTION = """\
A VM overlay (QMP handoff-overlay-save, HMP handoff_overlay_save) holds
what a VM adds to a base VM, and a description of the VM. A cloudlet that
holds the base turns it into the running VM:

  create      makes an overlay offline, from a VM's disk images and its
              saved memory state (or none: the VM at power-on)
  serve       the cloudlet's synthesis service: receives overlays over TCP,
              launches each VM, answers with its forwarded ports and timings
  synthesize  the client: sends an overlay to a service
  list        the client: its VMs at a service
  stop        the client: stops one of its VMs at a service
  stop-all    the operator: stops every VM of a service's --workdir
  launch      launches a local overlay file here, without a service
  record      runs a local overlay once and records the order in which it
              touches its memory first (its working set, for early start)
  info        prints an overlay's header and description

Nothing runs before the whole overlay arrived, its SHA-256 matched and
QEMU loaded it; an unknown base is refused before any bulk data.
"""


def log(message):
    print(f"handoff-synthesis: {message}", flush=True)


def host_port(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not HOST:PORT")
    return host.strip("[]"), int(port)


def cmd_info(args):
    header, description = overlay_file.read_info(args.overlay)
    print(json.dumps({"stream-bytes": header.stream_bytes,
                      "stream-sha256": header.digest.hex(),
                      "description": description}, indent=2))


def cmd_create(args):
    vm_args = args.vm_args[1:] if args.vm_args[:1] == ["--"] \
        else args.vm_args
    # Ended like Ctrl-C: QEMU stopped and no partial file left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(
        "handoff-synthesis: terminated; no overlay written"))
    create_overlay(args.output, args.base, vm_args, state=args.state,
                   compression=args.compression, qemu=args.qemu)
    print(f"overlay {args.output}: {os.path.getsize(args.output)} bytes "
          f"({args.compression or 'lzma-6'}; "
          f"{'from ' + args.state if args.state else 'at power-on'})")


def transport(args, host, role):
    """The TLS context of --tls-creds, or None with --insecure, which
    plaintext allows only to or on loopback."""
    if args.tls_creds and args.insecure:
        sys.exit("handoff-synthesis: --tls-creds and --insecure exclude "
                 "each other")
    if args.insecure:
        if not is_loopback(host):
            sys.exit(f"handoff-synthesis: --insecure is refused on {host}: "
                     f"plaintext only on a loopback address (overlays "
                     f"are a user's memory and disk)")
        return None
    if not args.tls_creds:
        sys.exit(f"handoff-synthesis: {role} needs --tls-creds DIR "
                 f"(mutual TLS), or --insecure on a loopback address")
    return (server_context if role == "serve" else
            client_context)(args.tls_creds)


def uid_range(text):
    first, _, count = text.partition(":")
    if not first.isdigit() or not count.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not FIRST:COUNT")
    return int(first), int(count)


def confinement(args, workdir):
    """The VMs' UidPool and Cgroup, or (--unconfined) none."""
    if args.unconfined:
        return None, None
    if os.geteuid() != 0:
        sys.exit("handoff-synthesis: confining VMs (own uid, mount "
                 "namespace) needs root; run as root, or give "
                 "--unconfined for VMs you trust")
    check_range(*args.vm_uids)
    cgroup = getattr(args, "cgroup", None)
    return (UidPool(*args.vm_uids, workdir=workdir),
            Cgroup(cgroup) if cgroup else None)


def cmd_serve(args):
    tls = transport(args, args.listen[0], "serve")
    # Spool, disks, sockets and logs: the service's and its VMs' alone.
    os.umask(0o077)
    # Absolute: each VM's mount namespace binds its directory by path.
    args.workdir = os.path.abspath(args.workdir)
    os.makedirs(args.workdir, mode=0o700, exist_ok=True)
    uids, cgroup = confinement(args, os.path.abspath(args.workdir))
    policy = ClientPolicy.load(args.clients) if args.clients else None
    server = SynthesisServer(args.listen, args.bases, args.workdir, tls=tls,
                             max_clients=args.max_clients,
                             max_vms=args.max_vms,
                             max_vms_per_client=args.max_vms_per_client,
                             max_bytes=args.max_bytes, qemu=args.qemu,
                             qemu_args=args.qemu_arg,
                             forward_address=args.forward_address,
                             paused=args.paused,
                             client_timeout=args.client_timeout,
                             transfer_timeout=args.transfer_timeout,
                             reconnect_timeout=args.reconnect_timeout,
                             uids=uids, cgroup=cgroup,
                             max_vm_ram_mib=args.max_vm_ram_mib,
                             max_vm_cpus=args.max_vm_cpus, policy=policy,
                             log=log)
    bases = server.bases()
    print(f"handoff-synthesis: serving {len(bases)} base(s) from "
          f"{args.bases} on {args.listen[0]}:{server.server_address[1]} "
          f"({'mutual TLS' if tls else 'plaintext, loopback only'}; VMs "
          f"{confined_as(args, cgroup)})", flush=True)
    server.verified.verify_all(bases)
    # SIGTERM ends the service like Ctrl-C; its VMs run on unless
    # --stop-vms-on-exit (a restart finds them again).
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(
        target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.abandon_syntheses()
        if args.stop_vms_on_exit:
            server.stop_vms()
        server.server_close()


def confined_as(args, cgroup):
    if args.unconfined:
        return "unconfined"
    first, count = args.vm_uids
    return (f"confined: uids {first}..{first + count - 1}, "
            f"{'cgroup ' + cgroup.path if cgroup else 'rlimits'}")


def cmd_stop_all(args):
    """Stops the VMs recorded in a service's --workdir, the service
    running or not (one that runs forgets them when it next looks)."""
    for record in scan(args.workdir, log):
        if args.owner is not None and record.owner != args.owner:
            continue
        try:
            record.stop()
        except Exception as e:          # noqa: B902 - the next VM all the same
            log(f"VM {record.name} of {record.owner}: clean-up failed: "
                f"{type(e).__name__}: {e}")
            continue
        log(f"VM {record.name} of {record.owner} stopped")


def print_result(result, as_json):
    if as_json:
        print(json.dumps(result))
        return
    t = result["timings"]
    ports = ", ".join(f"guest {g} -> {result['address']}:{h}"
                      for g, h in result["ports"].items()) or "none"
    if "complete" in result:
        running = f"running after {t['running']:.2f} s, " \
            if "running" in t else ""
        print(f"VM {result['vm']} {result['state']}: "
              f"{result['overlay-bytes']} overlay bytes, early start; all "
              f"but the segments in after {t['prefix']:.2f} s, launch "
              f"{t['launch']:.2f} s, {running}every segment in after "
              f"{t['complete']:.2f} s; ports: {ports}")
        return
    print(f"VM {result['vm']} {result['state']}: {result['overlay-bytes']} overlay "
          f"bytes; transfer {t['transfer']:.2f} s, launch {t['launch']:.2f} "
          f"s, apply after transfer {t['apply']:.2f} s, total "
          f"{t['total']:.2f} s; ports: {ports}")


def cmd_synthesize(args):
    tls = transport(args, args.service[0], "synthesize")
    result = synthesize(args.service, args.overlay, forward=args.forward,
                        name=args.name, tls=tls,
                        tls_name=args.tls_name or args.service[0],
                        progress=None if args.json else sys.stderr,
                        early_start=not args.no_early_start,
                        resume=args.resume)
    print_result(result, args.json)


def cmd_list(args):
    tls = transport(args, args.service[0], "list")
    answer = manage(args.service, {"op": "list"}, tls=tls,
                    tls_name=args.tls_name or args.service[0])
    if args.json:
        print(json.dumps(answer))
        return
    if not answer["vms"]:
        print("no VM of yours runs there")
    for vm in answer["vms"]:
        ports = ", ".join(f"guest {g} -> {vm['address']}:{h}"
                          for g, h in vm["ports"].items()) or "none"
        print(f"{vm['vm']} {vm['state']}; ports: {ports}")


def cmd_stop(args):
    tls = transport(args, args.service[0], "stop")
    answer = manage(args.service, {"op": "stop", "name": args.name},
                    tls=tls, tls_name=args.tls_name or args.service[0])
    print(json.dumps(answer) if args.json else
          f"VM {answer['vm']} {answer['state']}")


def _interrupt(*_):
    raise KeyboardInterrupt


def cmd_launch(args):
    _, description = overlay_file.read_info(args.overlay)
    workdir = os.path.abspath(args.workdir or
                              tempfile.mkdtemp(prefix="handoff-vm-"))
    os.makedirs(workdir, exist_ok=True)
    uids, _ = (None, None) if args.print_command else \
        confinement(args, None)
    vm = LaunchedVM(args.name, workdir, description, args.base,
                    qemu=args.qemu, forwards=args.forward,
                    overlay=os.path.abspath(args.overlay), uids=uids)
    if args.print_command:
        print(" ".join(vm.args))
        return
    # SIGTERM (a script's kill, systemd) stops the VM as Ctrl-C does,
    # rather than leaving its QEMU running with no one to stop it; and
    # the one way a background job of a shell without job control, which
    # ignores SIGINT, can be told to stop.
    signal.signal(signal.SIGTERM, _interrupt)
    vm.start()
    try:
        vm.wait_loaded()
        vm.run()
        print(f"VM {args.name} running (files in {workdir}; ports "
              f"{json.dumps(vm.ports)}); Ctrl-C or SIGTERM stops it",
              flush=True)
        vm.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        vm.stop()


def cmd_record(args):
    if (args.request is None) == (args.seconds is None):
        sys.exit("handoff-synthesis: record needs --request (with "
                 "--forward) or --seconds")
    if args.request is not None and args.forward is None:
        sys.exit("handoff-synthesis: --request needs --forward PORT")
    workdir = os.path.abspath(args.workdir or
                              tempfile.mkdtemp(prefix="handoff-record-"))
    os.makedirs(workdir, exist_ok=True)
    rec = record_working_set(args.overlay, args.base, args.out, workdir,
                             forward=args.forward, request=args.request,
                             seconds=args.seconds, qemu=args.qemu,
                             classified=args.classify)
    if rec.answer is not None:
        print(json.dumps(rec.answer))
    log(rec.summary(args.out))


def add_record(sub):
    r = sub.add_parser(
        "record", help="record the order in which a local overlay's VM "
        "touches its memory first",
        description="Launches the overlay here (paused), records with QMP "
        "handoff-record-start, runs the VM, sends its application REQUEST "
        "through guest port --forward (or lets it run --seconds), then "
        "stops the recording: QEMU writes OUT (docs/overlay-format.md, "
        "'Working-set order'). QEMU runs as this user, unconfined, and "
        "needs userfaultfd: root, or sysctl vm.unprivileged_userfaultfd=1.")
    r.add_argument("overlay")
    r.add_argument("--base", required=True, help="the base directory")
    r.add_argument("--out", required=True, help="the order file to write")
    r.add_argument("--forward", type=int, metavar="PORT",
                   help="the application's guest TCP port")
    r.add_argument("--request", metavar="LINE", help="the application's "
                   "first request (one line, the edge applications' "
                   "protocol); recording stops once it is answered")
    r.add_argument("--seconds", type=float, help="record this long "
                   "instead of a request")
    r.add_argument("--classify", action="store_true", help="also count the "
                   "touched pages the cloudlet holds (zero, or in the base) "
                   "and those it lacks, and their size with lzma-6 (reads "
                   "the whole base)")
    r.add_argument("--workdir", help="where the VM's files go (removed "
                   "after)")
    r.add_argument("--qemu", default=DEFAULT_QEMU)
    r.set_defaults(func=cmd_record)


def client_options(p, json_help):
    """The options every client command takes: how to reach the
    service."""
    p.add_argument("--tls-creds", metavar="DIR", help="the client's TLS "
                   "credentials: ca-cert.pem (the CA that signed the "
                   "service), client-cert.pem, client-key.pem; required "
                   "unless --insecure")
    p.add_argument("--tls-name", help="the name the service's certificate "
                   "must carry (default: HOST)")
    p.add_argument("--insecure", action="store_true", help="plaintext, to "
                   "a service on a loopback address only")
    p.add_argument("--json", action="store_true", help=json_help)


def confinement_options(p):
    p.add_argument("--vm-uids", type=uid_range, metavar="FIRST:COUNT",
                   default=(DEFAULT_FIRST_UID, DEFAULT_UIDS),
                   help="the uids each VM's QEMU gets one of (its gid the "
                   "same number), none an account or group may use "
                   f"({DEFAULT_FIRST_UID}:{DEFAULT_UIDS})")
    p.add_argument("--unconfined", action="store_true",
                   help="run QEMU as this process's user, seeing the "
                   "host's files (needed without root; for VMs you trust "
                   "only)")


def limit_options(s):
    """What bounds the service's clients and VMs (serve)."""
    s.add_argument("--max-clients", type=int, default=4,
                   help="syntheses at once; more are refused (4)")
    s.add_argument("--max-vms", type=int, default=16,
                   help="VMs this service keeps running, all clients "
                   "together (16)")
    s.add_argument("--max-vms-per-client", type=int, default=4,
                   help="VMs one client (one certificate name) may hold "
                   "(4)")
    s.add_argument("--clients", metavar="FILE", help="what each client "
                   "(certificate name; \"*\": any other) may ask, as JSON: "
                   "{NAME: {\"bases\": [BASE, ...], \"max-vms\": N}}; BASE "
                   "is a name in --bases. A client not in it (nor \"*\") is "
                   "refused. Without it: any base, --max-vms-per-client")
    s.add_argument("--client-timeout", type=float, default=120,
                   help="seconds a client may send nothing before its "
                   "synthesis is abandoned (120)")
    s.add_argument("--transfer-timeout", type=float, default=3600,
                   help="seconds a client's whole transfer may take, from "
                   "its connection to the overlay's last byte (3600)")
    s.add_argument("--reconnect-timeout", type=float, default=60,
                   help="seconds an early-start VM's client that left "
                   "before every segment was in may take to come back "
                   "(synthesize --resume) before the VM is removed (60)")
    s.add_argument("--max-vm-ram-mib", type=int, default=4096,
                   help="RAM one VM may have (its description's "
                   "machine.ram-bytes); larger overlays are refused before "
                   "their stream is read (4096)")
    s.add_argument("--max-vm-cpus", type=int, default=4,
                   help="vCPUs one VM may have (its description's "
                   "machine.max-cpus); refused likewise (4)")


def add_serve(sub):
    """serve and its options: the cloudlet's side."""
    s = sub.add_parser(
        "serve", help="run the cloudlet's synthesis service",
        description="Receives overlays over TCP (mutual TLS) and launches "
        "each VM from its machine description, through an allowlist. "
        "Every VM's QEMU is confined: a uid and gid of its own from "
        "--vm-uids (its directory and images are that uid's), a mount "
        "namespace holding only the system's files, QEMU, the firmware "
        "and the base read-only and its own directory, rlimits (open "
        "files, threads, no core dump) and, with --cgroup, memory.max, "
        "pids.max and cpu.max; QEMU's seccomp sandbox on top. Confining "
        "needs root (or --unconfined). RAM and vCPUs above "
        "--max-vm-ram-mib / --max-vm-cpus are refused before the stream is "
        "read. See docs/synthesis.md.")
    s.add_argument("--bases", required=True,
                   help="directory of base directories (each with base.json)")
    s.add_argument("--listen", type=host_port, default=("0.0.0.0", 7070),
                   help="HOST:PORT (0.0.0.0:7070)")
    s.add_argument("--tls-creds", metavar="DIR", help="the service's TLS "
                   "credentials, laid out as QEMU's tls-creds-x509 reads "
                   "them: ca-cert.pem (the CA whose clients are let in), "
                   "server-cert.pem, server-key.pem, optionally "
                   "ca-crl.pem; required unless --insecure")
    s.add_argument("--insecure", action="store_true", help="plaintext, "
                   "no client authentication: only on a loopback address")
    s.add_argument("--workdir", default="/var/lib/qemu-handoff/vms",
                   help="where each VM's images and sockets go")
    s.add_argument("--max-bytes", type=int, default=4 << 30,
                   help="largest overlay stream accepted (4 GiB)")
    s.add_argument("--forward-address", default="127.0.0.1",
                   help="host address forwarded VM ports listen on")
    s.add_argument("--qemu", default=DEFAULT_QEMU)
    s.add_argument("--qemu-arg", action="append", default=[],
                   help="extra QEMU argument for every VM (repeatable; "
                   "{workdir} is the VM's directory)")
    s.add_argument("--stop-vms-on-exit", action="store_true",
                   help="stop the VMs when the service ends; without it "
                   "they run on and a service restarted on the same "
                   "--workdir finds them again")
    limit_options(s)
    confinement_options(s)
    s.add_argument("--cgroup", metavar="DIR", help="a cgroup v2 directory "
                   "delegated to the service, not its own (memory, pids "
                   "and cpu controllers available): each VM runs in a "
                   "child with memory.max (its RAM + 512 MiB), pids.max "
                   "and cpu.max (its vCPUs); without it only rlimits bound "
                   "a VM's QEMU")
    s.add_argument("--paused", action="store_true",
                   help="leave each VM paused once verified and loaded "
                   "(resume it with `cont` on its QMP socket, "
                   "WORKDIR/NAME/qmp.sock)")
    s.set_defaults(func=cmd_serve)


def add_client_commands(sub):
    """synthesize, list and stop (a client's), stop-all (the operator's)."""
    c = sub.add_parser("synthesize", help="send an overlay to a service")
    c.add_argument("service", type=host_port, help="HOST:PORT")
    c.add_argument("overlay")
    c.add_argument("--forward", type=int, action="append", default=[],
                   metavar="GUEST_PORT", help="TCP port of the VM to "
                   "forward (repeatable)")
    c.add_argument("--name", help="VM name (default: the file's)")
    c.add_argument("--no-early-start", action="store_true",
                   help="an early-start overlay's VM runs only once every "
                   "segment is in (by default it runs once everything "
                   "else is)")
    c.add_argument("--resume", metavar="VM", help="go on with the early-"
                   "start synthesis of VM, whose connection broke: only "
                   "what the service lacks is sent")
    client_options(c, "print the result as JSON, no progress line")
    c.set_defaults(func=cmd_synthesize)

    ls = sub.add_parser("list", help="list your VMs at a service")
    ls.add_argument("service", type=host_port, help="HOST:PORT")
    client_options(ls, "print the answer as JSON")
    ls.set_defaults(func=cmd_list)

    st = sub.add_parser("stop", help="stop one of your VMs at a service "
                        "(its files are removed)")
    st.add_argument("service", type=host_port, help="HOST:PORT")
    st.add_argument("name", help="the VM's name, as synthesize or list "
                    "printed it")
    client_options(st, "print the answer as JSON")
    st.set_defaults(func=cmd_stop)

    sa = sub.add_parser("stop-all", help="stop every VM a service "
                        "launched (the operator's, on the cloudlet)")
    sa.add_argument("--workdir", default="/var/lib/qemu-handoff/vms",
                    help="the service's --workdir")
    sa.add_argument("--owner", help="only the VMs of this client "
                    "(certificate name), e.g. one struck off --clients")
    sa.set_defaults(func=cmd_stop_all)


def parser():
    p = argparse.ArgumentParser(
        prog="handoff-synthesis.py", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    cr = sub.add_parser(
        "create", help="make an overlay from a VM's images, offline",
        usage="%(prog)s --base DIR -o OVERLAY [--state FILE] "
              "[--compression MODE] -- QEMU_OPTIONS...",
        description="Starts QEMU paused on the VM's images with the VM's "
        "own options (QEMU_OPTIONS: machine, memory, drives, devices, as "
        "the VM is started; its drives name its disk images), loads the "
        "state if given, and saves the overlay as handoff-overlay-save "
        "does. The guest does not run.")
    cr.add_argument("--base", required=True, help="the base directory")
    cr.add_argument("-o", "--output", required=True, help="overlay file")
    cr.add_argument("--state", help="the VM's memory and device state: a "
                    "QEMU migration stream saved to a file (migrate "
                    "\"exec:cat > FILE\"); without it the overlay holds "
                    "the VM at power-on, and it boots when synthesized")
    cr.add_argument("--compression", help="a fixed handoff compression "
                    "mode (default lzma-6)")
    cr.add_argument("--qemu", default=DEFAULT_QEMU)
    cr.add_argument("vm_args", nargs=argparse.REMAINDER,
                    metavar="-- QEMU_OPTIONS")
    cr.set_defaults(func=cmd_create)

    add_serve(sub)
    add_client_commands(sub)

    la = sub.add_parser("launch", help="launch a local overlay here")
    la.add_argument("overlay")
    la.add_argument("--base", required=True, help="the base directory")
    la.add_argument("--name", default="vm")
    la.add_argument("--workdir")
    la.add_argument("--forward", type=int, action="append", default=[])
    la.add_argument("--qemu", default=DEFAULT_QEMU)
    la.add_argument("--print-command", action="store_true",
                    help="print the QEMU command line instead")
    confinement_options(la)
    la.set_defaults(func=cmd_launch)

    add_record(sub)

    i = sub.add_parser("info", help="print an overlay's description")
    i.add_argument("overlay")
    i.set_defaults(func=cmd_info)
    return p


def main():
    args = parser().parse_args()
    try:
        args.func(args)
    except (OverlayError, SynthesisFailed, LaunchError, CreateError,
            RecordError, TransportError, ConfinementError,
            ClientPolicyError, OSError) as e:
        sys.exit(f"handoff-synthesis: {e}")
    except KeyboardInterrupt:
        sys.exit("handoff-synthesis: interrupted")
