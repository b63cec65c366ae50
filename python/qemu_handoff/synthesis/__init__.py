# SPDX-License-Identifier: GPL-2.0-or-later
"""VM synthesis: overlays a cloudlet turns into running VMs.

launcher      a QEMU command line from an overlay's description, and the
              QEMU process that loads the overlay
service       the cloudlet's synthesis service (handoff-synthesis.py serve)
client        sending an overlay to it (handoff-synthesis.py synthesize)
create        an overlay made offline from a VM's images
policy        what an overlay's command-line fragment may hold, and
              how much RAM and how many vCPUs it asks for
confinement   each VM's QEMU confined: its uid, limits, cgroup
confine       run as root between fork and QEMU's exec: the mount
              namespace, the uid (a script of the standard library only)
port_relay    forwarded guest ports
cli           scripts/handoff-synthesis.py

The overlay file itself is read by qemu_handoff.formats.overlay.
"""
