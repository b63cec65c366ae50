# SPDX-License-Identifier: GPL-2.0-or-later
"""The cloudlet's command-line generator against hostile descriptions.

described-vm.json is what QEMU wrote for a test guest with every kind of
device a cloudlet runs (a NIC, the agent's port, a balloon with an
iothread, an RNG, an IDE disk). Each case below changes it as an attacker
would: the generator must refuse it, naming what it refused, before any
QEMU exists. Then Hypothesis changes it at random, and whatever the
generator accepts must be a command line of the allowlist's options, keys
and value shapes only, its files the cloudlet's own.
"""

import copy
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from qemu_handoff.formats import overlay as overlay_file
from qemu_handoff.formats.overlay import OverlayError
from qemu_handoff.synthesis.machine_args import DEVICES, Limits, machine_args

HERE = os.path.dirname(os.path.abspath(__file__))
DISKS = {"disk": "/cloudlet/vms/v/disk.qcow2"}


@pytest.fixture(scope="module")
def boot_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "boot"
    d.mkdir()
    for name in ("vmlinuz", "initrd.img"):
        (d / name).write_bytes(b"\0")
    os.symlink("/etc/shadow", d / "shadow-link")
    return str(d)


def described_vm():
    with open(os.path.join(HERE, "described-vm.json")) as f:
        return json.load(f)


def generate(description, boot_dir, forwards=()):
    return machine_args(description, Limits(max_ram_bytes=1 << 30,
                                            max_cpus=4),
                        boot_dir, DISKS, forwards=forwards)


def device(d, model):
    return next(x for x in d["devices"] if x["model"] == model)


def test_the_described_vm_is_generated(boot_dir):
    args = generate(described_vm(), boot_dir, forwards={8080: 40000})
    assert_allowlisted(args, boot_dir)
    assert "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40000-:8080" \
        in args


def _set(path, value):
    """A change setting @path (keys, device model first) to @value."""
    def change(d):
        target = d
        for key in path[:-1]:
            target = device(target, key) if key in DEVICES else target[key]
        target[path[-1]] = value
    return change


def _add_device(model, **props):
    def change(d):
        d["devices"].append({"model": model, "bus": "pci.0",
                             "properties": props})
    return change


def _props(model, **props):
    def change(d):
        device(d, model)["properties"].update(props)
    return change


# Each class of the ways through the old command-line policy (issue 21),
# and more: (change, what the refusal names).
HOSTILE = {
    "device loading a host file at reset":
        (_add_device("loader", file="/etc/shadow"), "model 'loader'"),
    "USB device exporting a host directory":
        (_add_device("usb-mtp", rootdir="/", readonly=False),
         "model 'usb-mtp'"),
    "USB pcap= creating a host file":
        (_add_device("usb-tablet", pcap="/etc/x"), "model 'usb-tablet'"),
    "a model named through a property":
        (_props("virtio-rng-pci", driver="vfio-pci"),
         "unknown field 'driver'"),
    "a QOM type named through a property":
        (_props("virtio-rng-pci", **{"qom-type": "memory-backend-file"}),
         "unknown field 'qom-type'"),
    "a raw socket netdev":
        (_props("virtio-net-pci", netdev="socket"),
         "netdev of type 'socket': only user-mode"),
    "restrict=off":
        (_props("virtio-net-pci", restrict=False),
         "unknown field 'restrict'"),
    "host forwards of the client's choosing":
        (_props("virtio-net-pci", hostfwd="tcp::22-:22"),
         "unknown field 'hostfwd'"),
    "-global on migration's parameters":
        (_set(["globals"], ["migration.handoff-base=/"]),
         "unknown field 'globals'"),
    "a QEMU command-line fragment":
        (_set(["args"], ["-drive", "file=/etc/passwd"]),
         "unknown field 'args'"),
    "a nested block key on a disk":
        (_set(["disks", 0, "file.filename"], "/etc/passwd"),
         "unknown field 'file.filename'"),
    "a drive naming a host file":
        (_props("ide-hd", drive="/etc/passwd"),
         "its drive is not a disk the overlay carries"),
    "a drive the overlay does not carry (null)":
        (_props("ide-hd", drive=None),
         "its drive is not a disk the overlay carries"),
    "an escape in a drive name":
        (_set(["disks", 0, "drive"], "ide0,,file=/etc/passwd"),
         "drive name is not allowed"),
    "an option inside a MAC":
        (_props("virtio-net-pci", mac="52:54:00:12:34:56,romfile=/x"),
         "property mac: not a MAC address"),
    "an option inside a disk serial":
        (_props("ide-hd", serial="QM1,drive=x"),
         "property serial: not of the form"),
    "an option ROM of the client's":
        (_props("virtio-net-pci", romfile="/etc/shadow"),
         "property romfile: not one of"),
    "a kernel by path":
        (_set(["boot", "kernel"], "/etc/shadow"),
         "file name '/etc/shadow' is not allowed"),
    "a kernel up the tree":
        (_set(["boot", "initrd"], "../../../etc/shadow"),
         "is not allowed"),
    "a kernel by link":
        (_set(["boot", "kernel"], "shadow-link"),
         "the base has no boot file shadow-link"),
    "a kernel the base lacks":
        (_set(["boot", "kernel"], "bzImage"),
         "the base has no boot file bzImage"),
    "firmware of the client's choosing":
        (_set(["boot", "firmware"], "OVMF.fd"),
         "the base has no boot file OVMF.fd"),
    "a control character in the kernel's command line":
        (_set(["boot", "append"], "console=ttyS0\n-object x"),
         "append must be printable ASCII"),
    "a machine type with options":
        (_set(["machine", "type"], "pc,accel=kvm,dumpdtb=/etc/x"),
         "type 'pc,accel=kvm,dumpdtb=/etc/x' is not allowed"),
    "a machine type of another kind":
        (_set(["machine", "type"], "microvm"), "type 'microvm'"),
    "a CPU model with features":
        (_set(["machine", "cpu-type"], "qemu64,+vmx-x86_64-cpu"),
         "cpu-type 'qemu64,+vmx-x86_64-cpu' is not allowed"),
    "the host's CPU":
        (_set(["machine", "cpu-type"], "host-x86_64-cpu"),
         "cpu-type 'host-x86_64-cpu' is not allowed"),
    "more RAM than the cloudlet allows":
        (lambda d: d["machine"].update({"ram-bytes": 64 << 30,
                                        "max-ram-bytes": 64 << 30}),
         "ram-bytes 68719476736 exceeds this cloudlet's limit of 1024 MiB"),
    "hotpluggable memory":
        (_set(["machine", "max-ram-bytes"], 1 << 30), "max-ram-bytes"),
    "more CPUs than the cloudlet allows":
        (lambda d: d["machine"].update({"cpus": 64, "max-cpus": 64}),
         "max-cpus 64 exceeds this cloudlet's limit of 4"),
    "a boolean for a number":
        (_set(["machine", "cpus"], True), "cpus must be an integer"),
    "a topology that does not multiply":
        (lambda d: d["machine"].update({"cpus": 2, "max-cpus": 2}),
         "does not multiply to max-cpus"),
    "a bus of the board's not the model's":
        (_set(["ide-hd", "bus"], "pci.0"), "bus 'pci.0' is not allowed"),
    "a port on a device that is not a serial bus":
        (_set(["handoff-agent", "on-device"], 0),
         "on-device names no device it can sit on"),
    "a port on a device after it":
        (_set(["handoff-agent", "on-device"], 99),
         "on-device names no device it can sit on"),
    "an iothread of another kind":
        (_props("virtio-balloon-pci", iothread="memory-backend-file"),
         "iothread 'memory-backend-file' is not allowed"),
    "an RNG reading a host device":
        (_props("virtio-rng-pci", rng="rng-random"),
         "rng 'rng-random' is not allowed"),
    "a chardev on the agent's port":
        (_props("handoff-agent", chardev="chardev-file"),
         "unknown field 'chardev'"),
    "a PCI address on the host bridge's slot":
        (_props("virtio-rng-pci", addr=0), "not a PCI address"),
    "too many devices":
        (lambda d: d["devices"].extend([d["devices"][1]] * 40),
         "must be a list of at most 32"),
    "too many disks":
        (lambda d: d["disks"].extend([d["disks"][0]] * 9),
         "must be a list of at most 8"),
    "one disk carried twice":
        (lambda d: d["disks"].append(dict(d["disks"][0])),
         "carried twice"),
    # Found by the property test below (a KeyError): a device linking a
    # drive the description does not list, though the caller made it.
    "a drive the description does not list":
        (lambda d: d["disks"].clear(),
         "its drive is not a disk the overlay carries"),
    "a serial port to a host file":
        (_set(["serial-ports"], "file:/etc/x"), "must be 0..4"),
    "a field the format does not have":
        (_set(["machine", "memory-backend"], "/dev/shm/x"),
         "unknown field 'memory-backend'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_description_is_refused_by_name(case, boot_dir):
    change, cause = HOSTILE[case]
    d = described_vm()
    change(d)
    with pytest.raises(OverlayError, match=re.escape(cause)):
        generate(d, boot_dir)


def test_duplicate_keys_are_refused():
    """JSON with a key twice: readers differ on which one counts (QEMU's
    option parser took the last), so the description is refused."""
    text = json.dumps(described_vm()).replace(
        '"model": "virtio-rng-pci"',
        '"model": "virtio-rng-pci", "model": "loader"')
    with pytest.raises(OverlayError, match="key 'model' twice"):
        overlay_file.parse_description(text.encode())


def test_a_description_nested_too_deeply_is_refused():
    """The description may be 1 MiB: all of it "[" is refused by name,
    not a RecursionError (which the service would answer as its own
    failure)."""
    with pytest.raises(OverlayError, match="nested too deeply"):
        overlay_file.parse_description(b"[" * overlay_file.DESCRIPTION_MAX)


def test_version_1_is_refused_with_how_to_resave():
    d = described_vm()
    del d["version"]
    d["args"] = ["-machine", "pc"]
    with pytest.raises(OverlayError, match="save the VM again"):
        overlay_file.parse_description(json.dumps(d).encode())


# --- any description: what is generated stays inside the allowlist ----------

OPTIONS = {"-nodefaults": 0, "-machine": 1, "-m": 1, "-cpu": 1, "-smp": 1,
           "-kernel": 1, "-initrd": 1, "-bios": 1, "-append": 1,
           "-serial": 1, "-drive": 1, "-device": 1, "-netdev": 1,
           "-object": 1}
# What is left of a value once our own file names are taken out: words
# the allowlist's types make (numbers, on/off, MACs, ids, enum words).
VALUE = re.compile(r"[A-Za-z0-9.:+_-]*\Z")
SMP_KEYS = {"cpus", "maxcpus", "sockets", "dies", "cores", "threads"}
DRIVE_KEYS = {"if", "id", "format", "cache", "discard", "file"}
NETDEV = re.compile(r"user,id=net\d+,restrict=on"
                    r"(,hostfwd=tcp:127\.0\.0\.1:\d+-:\d+)*\Z")
OBJECT = re.compile(r"(iothread,id=io\d+|rng-builtin,id=rng\d+)\Z")


def _pairs(text):
    assert ",," not in text, text
    return [p.split("=", 1) for p in text.split(",")]


def _check_option(option, value, boot_dir):
    if option in ("-kernel", "-initrd", "-bios"):
        assert os.path.dirname(value) == boot_dir, value
    elif option == "-append":
        assert all(" " <= c <= "~" for c in value)
    elif option == "-drive":
        head, _, path = value.partition(",file=")
        assert path in DISKS.values(), value
        assert all(k in DRIVE_KEYS and VALUE.match(v)
                   for k, v in _pairs(head)), value
    elif option == "-device":
        model, *pairs = _pairs(value)
        assert model[0] in DEVICES, value
        allowed = set(DEVICES[model[0]]) | {"id", "bus"}
        assert all(len(p) == 2 and p[0] in allowed and VALUE.match(p[1])
                   for p in pairs), value
    elif option == "-netdev":
        assert NETDEV.match(value), value
    elif option == "-object":
        assert OBJECT.match(value), value
    elif option == "-smp":
        assert all(k in SMP_KEYS and v.isdigit()
                   for k, v in _pairs(value)), value
    elif option == "-serial":
        assert value in ("chardev:console", "null"), value
    else:
        assert VALUE.match(value) and "," not in value, (option, value)


def assert_allowlisted(args, boot_dir):
    i = 0
    while i < len(args):
        option = args[i]
        assert option in OPTIONS, option
        if OPTIONS[option]:
            _check_option(option, args[i + 1], boot_dir)
        i += 1 + OPTIONS[option]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 64) | st.text(max_size=12)
    | st.sampled_from(["user", "disk", "rng-builtin", "iothread", "pci.0",
                       "ide.1", "vmlinuz", "../vmlinuz", "a,b", "x=y",
                       "on", "virtio-net-pci", "loader"]),
    lambda children: st.lists(children, max_size=3) |
    st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6)


def _paths(d, prefix=()):
    """Every place in @d a value can be set: (container, key)."""
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for key, value in items:
        yield d, key
        if isinstance(value, (dict, list)):
            yield from _paths(value, prefix + (key,))


# More for a longer search: HANDOFF_PROPERTY_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("HANDOFF_PROPERTY_EXAMPLES", 250))


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_whatever_is_generated_is_allowlisted(boot_dir, data):
    """Random changes to the described VM, at any depth: refused by
    OverlayError, or made into options of the allowlist only."""
    d = copy.deepcopy(described_vm())
    for _ in range(data.draw(st.integers(1, 4))):
        places = list(_paths(d))
        container, key = data.draw(st.sampled_from(places))
        if isinstance(container, dict) and data.draw(st.booleans()):
            key = data.draw(st.text(max_size=10) | st.sampled_from(
                ["drive", "netdev", "romfile", "file", "bus", "on-device",
                 "driver", "chardev", "addr", "firmware"]))
            container[key] = data.draw(JSON)
        else:
            container[key] = data.draw(JSON)
    try:
        args = generate(d, boot_dir, forwards={8080: 40000})
    except OverlayError:
        return
    assert_allowlisted(args, boot_dir)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(st.binary(max_size=256) | JSON.map(lambda v: json.dumps(v).encode()))
def test_the_description_parser_takes_any_bytes(raw):
    """Any bytes: a description, or OverlayError (never another
    exception, which the service would answer as its own failure)."""
    try:
        overlay_file.parse_description(raw)
    except OverlayError:
        pass
