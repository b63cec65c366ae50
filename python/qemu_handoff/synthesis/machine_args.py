# SPDX-License-Identifier: GPL-2.0-or-later
"""A cloudlet's QEMU command line, generated from an overlay's machine
description (version 2, docs/overlay-format.md) through an allowlist.

The description comes from a client. None of its text reaches QEMU's
option parser: every option and key below is written here, and a value
from the description is used only after it matched a type of ours (an
integer in a range, a boolean, one of a fixed set of words, a MAC address,
a drive name of letters and digits). File names in the description are
only looked up among the base's own boot files. A model, property, bus or
field that is not listed here is refused by name, before any QEMU starts.

What a listed device may reach is what a VM made from a base needs: disks
the cloudlet makes, user-mode networking with restrict=on (the cloudlet
forwards its own ports), serial consoles of the cloudlet's, the guest
agent's port, a balloon, an RNG fed from QEMU's own generator.
"""

import os
import re

from ..formats.agent_protocol import PORT_NAME as AGENT_PORT
from ..formats.overlay import OverlayError

MAX_DEVICES = 32
MAX_DISKS = 8
MAX_SERIAL_PORTS = 4
MAX_DISK_BYTES = 2 << 40
MAX_APPEND = 4096

MACHINE_TYPE = re.compile(r"pc-(i440fx|q35)-[1-9]\.[0-9]{1,2}\Z")
CPU_MODELS = frozenset((
    "qemu64", "qemu32", "kvm64", "kvm32", "max", "base", "486", "pentium",
    "core2duo", "Nehalem", "Westmere", "SandyBridge", "IvyBridge",
    "Haswell", "Broadwell", "Skylake-Client", "Skylake-Server",
    "Cascadelake-Server", "Icelake-Server", "EPYC", "EPYC-Rome"))
ACCELS = frozenset(("tcg", "kvm"))
BOOT_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
DRIVE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
# "early-start" is read by formats/overlay.py's early_start(), which
# allows its own fields only.
TOP_FIELDS = frozenset(("version", "base", "machine", "boot", "serial-ports",
                        "devices", "disks", "compression", "created",
                        "early-start"))
MACHINE_FIELDS = frozenset(("type", "ram-bytes", "max-ram-bytes", "cpus",
                            "max-cpus", "topology", "cpu-type", "accel"))
TOPOLOGY_FIELDS = ("sockets", "dies", "cores", "threads")
BOOT_FIELDS = frozenset(("kernel", "initrd", "firmware", "append"))
DEVICE_FIELDS = frozenset(("model", "bus", "on-device", "properties"))
DISK_FIELDS = frozenset(("region", "drive", "bytes", "base"))


class Limits:
    """What one VM may have on this cloudlet (the operator's limits)."""

    def __init__(self, max_ram_bytes=16 << 30, max_cpus=8):
        self.max_ram_bytes = max_ram_bytes
        self.max_cpus = max_cpus


# --- value types: each returns QEMU option text of our own making -----------

def _bool(value):
    if type(value) is not bool:
        raise ValueError("not a boolean")
    return "on" if value else "off"


def _uint(lo, hi):
    def check(value):
        if type(value) is not int or not lo <= value <= hi:
            raise ValueError(f"not an integer in {lo}..{hi}")
        return str(value)
    return check


def _devfn(value):
    """A PCI slot and function (QOM's devfn): "0xSS.F"."""
    if type(value) is not int or not 8 <= value <= 255:
        raise ValueError("not a PCI address of a slot 1..31")
    return f"0x{value >> 3:02x}.{value & 7}"


def _one_of(*words):
    """One of @words, of the same type (True is not 1 here)."""
    def check(value):
        if not any(type(value) is type(w) and value == w for w in words):
            raise ValueError(f"not one of {', '.join(map(str, words))}")
        return str(value)
    return check


def _mac(value):
    if not isinstance(value, str) or not MAC.match(value):
        raise ValueError("not a MAC address")
    return value


def _shaped(pattern):
    regex = re.compile(pattern + r"\Z")

    def check(value):
        if not isinstance(value, str) or not regex.match(value):
            raise ValueError(f"not of the form {pattern}")
        return value
    return check


# Properties a device's description may carry, per model. QEMU writes
# those that differ from the model's defaults, including what it computed
# when the device was realized (a PCI address, a disk's geometry, a MAC):
# the same values make the same device here. Links to host resources
# (drive, netdev, rng, iothread) are kinds, not names: the generator
# attaches the cloudlet's own.
PCI_PROPERTIES = {"addr": _devfn, "multifunction": _bool}
VIRTIO_PROPERTIES = {**PCI_PROPERTIES, "vectors": _uint(0, 64),
                     "ioeventfd": _bool,
                     "disable-legacy": _one_of("on", "off", "auto"),
                     "disable-modern": _bool}
BLOCK_PROPERTIES = {"drive": "disk", "cyls": _uint(1, 65535),
                    "heads": _uint(1, 255), "secs": _uint(1, 255),
                    "logical_block_size": _one_of(512, 4096),
                    "physical_block_size": _one_of(512, 4096),
                    "discard_granularity": _uint(0, 1 << 30)}
DEVICES = {
    "virtio-blk-pci": {**VIRTIO_PROPERTIES, **BLOCK_PROPERTIES,
                       "num-queues": _uint(1, 64),
                       "queue-size": _one_of(*(1 << n for n in range(
                           2, 11))),
                       "discard": _bool, "write-zeroes": _bool},
    "ide-hd": {**BLOCK_PROPERTIES, "unit": _uint(0, 1),
               "serial": _shaped(r"[A-Za-z0-9]{1,20}"), "ver": _one_of("2.5+"),
               "bios-chs-trans": _one_of("none", "lba", "large", "rechs",
                                         "auto")},
    "virtio-net-pci": {**VIRTIO_PROPERTIES, "netdev": "nic", "mac": _mac,
                       "romfile": _one_of("", "efi-virtio.rom")},
    "e1000": {**PCI_PROPERTIES, "netdev": "nic", "mac": _mac,
              "romfile": _one_of("", "efi-e1000.rom")},
    "virtio-serial-pci": {**VIRTIO_PROPERTIES, "max_ports": _uint(1, 31),
                          "class": _one_of(0x0780, 0x0703)},
    "handoff-agent": {"nr": _uint(1, 31), "name": _one_of(AGENT_PORT)},
    "virtio-balloon-pci": {**VIRTIO_PROPERTIES, "iothread": "iothread",
                           "free-page-hint": _bool,
                           "free-page-reporting": _bool,
                           "deflate-on-oom": _bool},
    "virtio-rng-pci": {**VIRTIO_PROPERTIES, "rng": "rng",
                       "max-bytes": _uint(1, 1 << 62),
                       "period": _uint(1, 1 << 31)},
}
# A NIC's option ROM is a property without a default: QEMU writes it only
# when set, so a NIC described without one had none ("romfile=").
ROM_MODELS = ("virtio-net-pci", "e1000")
# Where a device may sit: one of the board's buses by name, or the bus of
# a device of a listed model (by its index in the description).
PCI_BUSES = ("pci.0", "pcie.0")
BOARD_BUSES = {**{m: PCI_BUSES for m in DEVICES if m.endswith("-pci")},
               "e1000": PCI_BUSES, "ide-hd": ("ide.0", "ide.1")}
PARENT_MODELS = {"handoff-agent": ("virtio-serial-pci",)}
# The firmware QEMU loads for a PC when none is named: not a base's file.
DEFAULT_FIRMWARE = "bios-256k.bin"


def _word(value):
    """@value if it is a string, else None: what the description gives is
    looked up in our tables only as a string (a list is not a key)."""
    return value if isinstance(value, str) else None


def _shown(value):
    """A client's value in a refusal: quoted, and short."""
    text = repr(value)
    return text if len(text) <= 64 else text[:60] + "...'"


def _refuse(where, what):
    raise OverlayError(f"overlay description: {where}: {what}")


def _only(fields, allowed, where):
    if not isinstance(fields, dict):
        _refuse(where, "not an object")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        _refuse(where, f"unknown field {_shown(unknown[0])}")


def _int_field(group, key, lo, hi, where):
    value = group.get(key)
    if type(value) is not int or not lo <= value <= hi:
        _refuse(where, f"{key} must be an integer in {lo}..{hi}")
    return value


def _escape(value):
    """A cloudlet path inside QEMU's comma-separated option syntax."""
    return value.replace(",", ",,")


class Generator:
    """Builds the option list for one description; refuses by name."""

    def __init__(self, description, limits, boot_dir, disks, console,
                 forwards, address):
        """@disks: region -> image path (the cloudlet's); @console: the
        chardev id of the first serial port; @forwards: guest port -> host
        port on @address; @boot_dir: the base's boot files."""
        self.d = description
        self.limits = limits
        self.boot_dir = boot_dir
        self.disks = disks
        self.console = console
        self.forwards = dict(forwards)
        self.address = address
        self.args = []
        self.nics = 0
        self.attached = set()

    def generate(self):
        _only(self.d, TOP_FIELDS, "description")
        if self.d.get("version") != 2:
            _refuse("version", "not 2")
        self._machine()
        self._boot()
        self._serials()
        self._devices()
        if self.forwards and not self.nics:
            _refuse("devices", "ports to forward, but the VM has no NIC")
        return self.args

    def _machine(self):
        m = self.d.get("machine")
        _only(m, MACHINE_FIELDS, "machine")
        if not isinstance(m.get("type"), str) or \
                not MACHINE_TYPE.match(m["type"]):
            _refuse("machine", f"type {_shown(m.get('type'))} is not allowed")
        ram = _int_field(m, "ram-bytes", 16 << 20, 1 << 50, "machine")
        if ram % (1 << 20) or m.get("max-ram-bytes") != ram:
            _refuse("machine", "ram-bytes must be whole MiB, without "
                               "hotpluggable memory (max-ram-bytes)")
        if ram > self.limits.max_ram_bytes:
            _refuse("machine", f"ram-bytes {ram} exceeds this cloudlet's "
                               f"limit of {self.limits.max_ram_bytes >> 20} "
                               f"MiB")
        cpus = _int_field(m, "cpus", 1, 1024, "machine")
        max_cpus = _int_field(m, "max-cpus", cpus, 1024, "machine")
        if max_cpus > self.limits.max_cpus:
            _refuse("machine", f"max-cpus {max_cpus} exceeds this "
                               f"cloudlet's limit of {self.limits.max_cpus}")
        topology = m.get("topology")
        _only(topology, frozenset(TOPOLOGY_FIELDS), "machine.topology")
        shape = [_int_field(topology, k, 1, max_cpus, "machine.topology")
                 for k in TOPOLOGY_FIELDS]
        if shape[0] * shape[1] * shape[2] * shape[3] != max_cpus:
            _refuse("machine.topology", "does not multiply to max-cpus")
        cpu = m.get("cpu-type")
        model = cpu[:-len("-x86_64-cpu")] if isinstance(cpu, str) and \
            cpu.endswith("-x86_64-cpu") else None
        if model not in CPU_MODELS:
            _refuse("machine", f"cpu-type {_shown(cpu)} is not allowed")
        if _word(m.get("accel")) not in ACCELS:
            _refuse("machine", f"accel {_shown(m.get('accel'))} is not allowed")
        self.args += ["-nodefaults", "-machine", m["type"],
                      "-m", f"{ram >> 20}M", "-cpu", model,
                      "-smp", f"cpus={cpus},maxcpus={max_cpus},"
                              f"sockets={shape[0]},dies={shape[1]},"
                              f"cores={shape[2]},threads={shape[3]}"]

    def _boot_file(self, name):
        if not isinstance(name, str) or not BOOT_FILE.match(name):
            _refuse("boot", f"file name {_shown(name)} is not allowed")
        path = os.path.join(self.boot_dir, name)
        if not os.path.isfile(path) or os.path.islink(path):
            _refuse("boot", f"the base has no boot file {name}")
        return path

    def _boot(self):
        boot = self.d.get("boot", {})
        _only(boot, BOOT_FIELDS, "boot")
        for key, option in (("kernel", "-kernel"), ("initrd", "-initrd"),
                            ("firmware", "-bios")):
            if key in boot and (key, boot[key]) != ("firmware",
                                                     DEFAULT_FIRMWARE):
                self.args += [option, self._boot_file(boot[key])]
        if "append" in boot:
            text = boot["append"]
            # -append is stored whole, never split at commas (vl.c puts
            # it in the machine's options as one string): printable text.
            if "kernel" not in boot or not isinstance(text, str) or \
                    len(text) > MAX_APPEND or \
                    not all(" " <= c <= "~" for c in text):
                _refuse("boot", "append must be printable ASCII for a kernel")
            self.args += ["-append", text]

    def _serials(self):
        n = self.d.get("serial-ports", 0)
        if type(n) is not int or not 0 <= n <= MAX_SERIAL_PORTS:
            _refuse("serial-ports", f"must be 0..{MAX_SERIAL_PORTS}")
        for i in range(n):
            self.args += ["-serial",
                          f"chardev:{self.console}" if i == 0 else "null"]

    def _devices(self):
        devices = self.d.get("devices", [])
        if not isinstance(devices, list) or len(devices) > MAX_DEVICES:
            _refuse("devices", f"must be a list of at most {MAX_DEVICES}")
        self.models = []
        for i, device in enumerate(devices):
            self.args += self._device(i, device)

    def _device(self, i, device):
        where = f"device {i}"
        _only(device, DEVICE_FIELDS, where)
        model = _word(device.get("model"))
        if model not in DEVICES:
            _refuse(where, f"model {_shown(model)} is not allowed")
        where = f"device {i} ({model})"
        self.models.append(model)
        props = device.get("properties", {})
        _only(props, frozenset(DEVICES[model]), where)
        out, text = [], [model, f"id=dev{i}"]
        self._place(i, model, device, text, where)
        if model in ROM_MODELS and "romfile" not in props:
            text.append("romfile=")
        for key in sorted(props):
            kind = DEVICES[model][key]
            if isinstance(kind, str):
                out += self._link(i, kind, props[key], text, where)
                continue
            try:
                text.append(f"{key}={kind(props[key])}")
            except ValueError as e:
                _refuse(where, f"property {key}: {e}")
        return [*out, "-device", ",".join(text)]

    def _place(self, i, model, device, text, where):
        if "bus" in device:
            if _word(device["bus"]) not in BOARD_BUSES.get(model, ()):
                _refuse(where, f"bus {_shown(device['bus'])} is not allowed")
            text.append(f"bus={device['bus']}")
        elif "on-device" in device:
            parent = device["on-device"]
            if type(parent) is not int or not 0 <= parent < i or \
                    self.models[parent] not in PARENT_MODELS.get(model, ()):
                _refuse(where, "on-device names no device it can sit on")
            text.append(f"bus=dev{parent}.0")
        elif model in PARENT_MODELS:
            _refuse(where, "needs on-device")

    def _link(self, i, kind, value, text, where):
        """Options for a host resource the device links to: always the
        cloudlet's own."""
        if kind == "disk":
            # Both: the disks made for it (the caller's) and those the
            # description lists, which a hostile one may leave out.
            if _word(value) not in self.disks or \
                    value not in self.drive_names:
                _refuse(where, "its drive is not a disk the overlay carries")
            if value in self.attached:
                _refuse(where, f"disk {value} is attached twice")
            self.attached.add(value)
            drive = self.drive_names[value]
            text.append(f"drive={drive}")
            return ["-drive", f"if=none,id={drive},format=qcow2,"
                              f"cache=writeback,discard=unmap,"
                              f"file={_escape(self.disks[value])}"]
        if kind == "nic":
            if value != "user":
                _refuse(where, f"netdev of type {_shown(value)}: only user-mode")
            self.nics += 1
            netdev = f"user,id=net{i},restrict=on"
            if self.nics == 1:
                netdev += "".join(
                    f",hostfwd=tcp:{self.address}:{_uint(1, 65535)(host)}"
                    f"-:{_uint(1, 65535)(guest)}"
                    for guest, host in sorted(self.forwards.items()))
            text.append(f"netdev=net{i}")
            return ["-netdev", netdev]
        if kind == "iothread" and value == "iothread":
            text.append(f"iothread=io{i}")
            return ["-object", f"iothread,id=io{i}"]
        if kind == "rng" and value == "rng-builtin":
            text.append(f"rng=rng{i}")
            return ["-object", f"rng-builtin,id=rng{i}"]
        _refuse(where, f"{kind} {_shown(value)} is not allowed")


def check_disks(description, limits=None):
    """The disks a description carries: region -> drive name, checked."""
    disks = description.get("disks")
    if not isinstance(disks, list) or len(disks) > MAX_DISKS:
        _refuse("disks", f"must be a list of at most {MAX_DISKS}")
    names, bases = {}, 0
    for i, disk in enumerate(disks):
        _only(disk, DISK_FIELDS, f"disk {i}")
        drive, region = disk.get("drive"), disk.get("region")
        if not isinstance(drive, str) or not DRIVE_NAME.match(drive):
            _refuse(f"disk {i}", "drive name is not allowed")
        base = disk.get("base")
        if type(base) is not bool or region != ("disk" if base
                                                else f"drive:{drive}"):
            _refuse(f"disk {i}", "region does not match its drive")
        _int_field(disk, "bytes", 1, MAX_DISK_BYTES, f"disk {i}")
        if region in names or drive in names.values():
            _refuse(f"disk {i}", "carried twice")
        names[region] = drive
        bases += base
    if bases > 1:
        _refuse("disks", "more than one base disk")
    return names


def machine_args(description, limits, boot_dir, disks, console="console",
                 forwards=(), address="127.0.0.1"):
    """QEMU options for @description's machine, or OverlayError naming
    what is not allowed. @disks: region -> the cloudlet's image path."""
    generator = Generator(description, limits, boot_dir, disks, console,
                          dict(forwards), address)
    generator.drive_names = check_disks(description)
    return generator.generate()
