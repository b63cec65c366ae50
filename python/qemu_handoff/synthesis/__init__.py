# SPDX-License-Identifier: GPL-2.0-or-later
"""VM synthesis: overlays a cloudlet turns into running VMs.

machine_args  the QEMU options of an overlay's machine description,
              through the cloudlet's allowlist
launcher      the QEMU process that loads an overlay, with the
              cloudlet's own disks, console and forwards
service       the cloudlet's synthesis service (handoff-synthesis.py serve)
client        sending an overlay to it (handoff-synthesis.py synthesize)
create        an overlay made offline from a VM's images
confinement   each VM's QEMU confined: its uid, limits, cgroup
confine       run as root between fork and QEMU's exec: the mount
              namespace, the uid (a script of the standard library only)
client_policy what each client may ask (serve --clients): bases, VMs
registry      each VM's record (WORKDIR/.records, root's): VMs found again
              after a restart
base_check    each base verified once per service, again when it changes
port_relay    forwarded guest ports
cli           scripts/handoff-synthesis.py

The overlay file itself is read by qemu_handoff.formats.overlay.
"""
