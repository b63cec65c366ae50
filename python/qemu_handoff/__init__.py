# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-handoff's Python: tests, benchmarks, demos and the synthesis service.

Like QEMU's own Python (qemu.qmp, qemu.machine): one package, a module per
concept. The programs in scripts/ are thin entry points that import it
(they find it through the scripts/qemu_handoff link, since Python puts a
script's own directory on its path); the tests find it through pytest.ini.
Nothing edits sys.path.

paths          where the checkout, its build and the firmware are
qmp            the QMP client every module and test uses
formats        readers of the files and protocols the C side defines:
               base manifests, overlay files, the guest agent's protocol
guest          real QEMU processes running the test and edge guests
bases          bases saved from a guest, VMs resumed from them and moved
wan            the emulated WAN link (tc tbf + delay relay, namespaces)
tls            a certificate authority and TLS objects for handoffs
gdbstub        guest memory read through QEMU's gdbstub
ram_owner      who owns a guest-physical byte (virtqueues, page classes)
identity       proof that a moved VM is the same VM
workloads      what the guest does before and while it moves
scenario       one measured move (handoff or stock) over the emulated WAN
libvirt_hosts  two libvirt hosts of the fork on one machine
synthesis      the cloudlet's synthesis service, its client, the launcher
breakdown      what a VM's modified state is made of (vm-breakdown)
bench          the benchmarks (scripts/bench*.py)
demo           the README's demo (scripts/demo-*.py)
"""
