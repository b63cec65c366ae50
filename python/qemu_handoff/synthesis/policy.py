# SPDX-License-Identifier: GPL-2.0-or-later
"""What an overlay's command-line fragment may ask of a cloudlet.

An overlay comes from a client, and its description becomes a QEMU command
line on the cloudlet: it must not reach the host beyond what a VM made
from a base needs. So the fragment is checked before QEMU starts:

- only the options QEMU itself puts there (handoff-overlay-args.c's list)
  are allowed, each at most as QEMU writes it;
- disks are the images the cloudlet makes ("@disk:REGION"); no other
  drive names a file;
- files QEMU would read from the host (-kernel, -initrd, -bios, -L) lie
  under directories the operator allows (the base's, firmware's);
- the network is user-mode without host shares (smb=, tftp=, guestfwd=)
  or forwards of the client's choosing: the cloudlet forwards its own;
- no device or object that opens a host resource (VFIO, vhost, USB host
  devices, files).
"""

import os
import re

from ..formats.overlay import OverlayError

ARG_OPTIONS = {"-machine", "-M", "-m", "-smp", "-cpu", "-device", "-global",
               "-kernel", "-initrd", "-append", "-netdev", "-nic", "-net",
               "-vga", "-rtc", "-boot", "-bios", "-L", "-drive", "-serial",
               "-object"}
FLAG_OPTIONS = {"-nodefaults", "-no-reboot", "-no-shutdown", "-no-hpet",
                "-no-acpi"}
HOST_FILE_OPTIONS = {"-kernel", "-initrd", "-bios", "-L"}
OBJECT_TYPES = {"iothread", "memory-backend-ram", "rng-builtin"}
DEVICE_DENIED = re.compile(r"^(vfio|vhost|usb-host|u2f-passthru|xen|"
                           r"ivshmem|virtio-9p|vhost-user|nvdimm|"
                           r"pc-dimm|tpm)")
NETDEV_DENIED_KEYS = {"smb", "tftp", "guestfwd", "hostfwd", "bootfile",
                      "script", "downscript", "fd", "fds", "ifname"}
MACHINE_DENIED_KEYS = {"memory-backend", "memory-encryption", "dumpdtb"}
DRIVE_FILE = re.compile(r"(?:^|,)file=([^,]*(?:,,[^,]*)*)")


def _keys(value):
    """The keys of QEMU option text "a=1,b=2" (implied first key kept as
    its own value)."""
    parts = re.split(r"(?<!,),(?!,)", value)
    return {p.split("=", 1)[0] for p in parts if p}


def _first(value):
    return re.split(r"(?<!,),(?!,)", value, maxsplit=1)[0]


def _check_host_file(option, path, roots):
    real = os.path.realpath(path)
    if not any(real == r or real.startswith(r.rstrip("/") + "/")
               for r in roots):
        raise OverlayError(f"overlay asks for host file {option} {path}, "
                           f"outside the directories this cloudlet allows")


def _check_drive(value):
    keys = _keys(value)
    if keys & {"driver", "filename"} or any(
            k.startswith(("file.", "backing")) for k in keys):
        raise OverlayError(f"overlay drive names its own backend: {value}")
    if any(not f.startswith("@disk:") for f in DRIVE_FILE.findall(value)):
        raise OverlayError(f"overlay drive names a host file: {value}")


def _check_value(option, value, roots):
    if value.lstrip().startswith("{"):
        raise OverlayError(f"overlay option {option} in JSON syntax is not "
                           f"accepted")
    if option in HOST_FILE_OPTIONS:
        _check_host_file(option, value, roots)
    elif option == "-drive":
        _check_drive(value)
    elif option == "-global" and value.startswith("migration."):
        raise OverlayError(f"overlay sets migration's own {value}")
    elif option == "-device":
        driver = _first(value).removeprefix("driver=")
        if DEVICE_DENIED.match(driver):
            raise OverlayError(f"overlay device {driver} is not allowed")
    elif option == "-object":
        kind = _first(value).removeprefix("qom-type=")
        if kind not in OBJECT_TYPES:
            raise OverlayError(f"overlay object {kind} is not allowed")
    elif option in ("-netdev", "-nic", "-net"):
        if _first(value).removeprefix("type=") not in ("user", "nic"):
            raise OverlayError(f"overlay network {value} is not user-mode")
        denied = _keys(value) & NETDEV_DENIED_KEYS
        if denied:
            raise OverlayError(f"overlay network asks for {sorted(denied)}")
    elif option in ("-machine", "-M"):
        denied = _keys(value) & MACHINE_DENIED_KEYS
        if denied:
            raise OverlayError(f"overlay machine asks for {sorted(denied)}")
    elif option == "-serial" and value != "@serial":
        raise OverlayError(f"overlay serial port {value}: only @serial")


def check_args(args, roots):
    """Raises OverlayError naming the first argument of @args that a
    cloudlet must not run; @roots: directories host files may come from."""
    roots = [os.path.realpath(r) for r in roots]
    i = 0
    while i < len(args):
        option = args[i]
        if option in FLAG_OPTIONS:
            i += 1
            continue
        if option not in ARG_OPTIONS or i + 1 >= len(args):
            raise OverlayError(f"overlay asks for option {option}, which a "
                               f"cloudlet does not run")
        _check_value(option, args[i + 1], roots)
        i += 2


# QEMU's size suffixes; a bare -m number is MiB.
SIZE_SUFFIX = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
               "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}
SMP_KEYS = {"cpus", "maxcpus", "sockets", "dies", "clusters", "cores",
            "threads"}


def _options(option, value, implied):
    """QEMU option text "v,k=v,..." as a dict, the first bare value under
    @implied; anything else refused."""
    out = {}
    for i, part in enumerate(value.split(",")):
        key, eq, val = part.partition("=")
        if not eq and i == 0:
            key, val = implied, part
        if not eq and i or key in out:
            raise OverlayError(f"overlay's {option} {value} is not "
                               f"understood")
        out[key] = val
    return out


def _size(option, value, text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([bkmgtpe]?)", text.strip(), re.I)
    if not m:
        raise OverlayError(f"overlay's {option} {value} is not understood")
    return int(float(m.group(1)) * SIZE_SUFFIX[m.group(2).lower() or "m"])


def machine_size(args):
    """The most RAM (bytes) and CPUs QEMU gives a VM of @args (checked
    with check_args): -m's size or maxmem, -smp's cpus, maxcpus or the
    product of its topology; QEMU's defaults (128 MiB, 1) without them."""
    ram, cpus = 128 << 20, 1
    for i, option in enumerate(args[:-1]):
        # The machine's own properties for the same (smp.*, memory.*).
        if option in ("-machine", "-M") and any(
                k.startswith(("smp", "memory")) for k in _keys(args[i + 1])):
            raise OverlayError(f"overlay sizes its machine in "
                               f"{option} {args[i + 1]}: only -m and -smp")
    for option in ("-m", "-smp"):
        values = [args[i + 1] for i in range(len(args) - 1)
                  if args[i] == option]
        if len(values) > 1:
            raise OverlayError(f"overlay gives {option} more than once")
        if not values:
            continue
        value = values[0]
        if option == "-m":
            opts = _options(option, value, "size")
            if set(opts) - {"size", "maxmem", "slots"}:
                raise OverlayError(f"overlay's -m {value} is not understood")
            ram = max(_size(option, value, opts[k])
                      for k in ("size", "maxmem") if k in opts)
            continue
        opts = _options(option, value, "cpus")
        if set(opts) - SMP_KEYS or not all(v.isdigit() for v in opts.values()):
            raise OverlayError(f"overlay's -smp {value} is not understood")
        n = {k: int(v) for k, v in opts.items()}
        topology = 1
        for k in ("sockets", "dies", "clusters", "cores", "threads"):
            topology *= n.get(k, 1)
        cpus = max(n.get("cpus", 1), n.get("maxcpus", 1), topology)
    return ram, cpus


def check_machine(description, max_ram_bytes, max_cpus):
    """Refuses a VM larger than @max_ram_bytes or @max_cpus: by its
    description's figures (QEMU writes them), then by the options QEMU
    will be given, which are what QEMU goes by."""
    machine = description["machine"]
    mib = max_ram_bytes >> 20
    for key, limit, text in (("ram-bytes", max_ram_bytes, f"{mib} MiB"),
                             ("cpus", max_cpus, str(max_cpus)),
                             ("max-cpus", max_cpus, str(max_cpus))):
        value = machine.get(key, 0 if key == "max-cpus" else None)
        if type(value) is not int or value < 0:
            raise OverlayError(f"overlay description's machine.{key} is "
                               f"not a number")
        if value > limit:
            raise OverlayError(f"overlay's machine.{key} {value} exceeds "
                               f"this service's limit of {text}")
    ram, cpus = machine_size(description["args"])
    if ram > max_ram_bytes:
        value = description["args"][description["args"].index("-m") + 1]
        raise OverlayError(f"overlay's -m {value} asks for {ram >> 20} MiB, "
                           f"more than this service's limit of {mib} MiB")
    if cpus > max_cpus:
        value = description["args"][description["args"].index("-smp") + 1]
        raise OverlayError(f"overlay's -smp {value} asks for {cpus} CPUs, "
                           f"more than this service's limit of {max_cpus}")
