# SPDX-License-Identifier: GPL-2.0-or-later
"""The README's demo (scripts/demo.sh).

handoff  handoff versus stock migration of one VM (scripts/demo-handoff.py)
libvirt  virsh migrate --handoff between two libvirt hosts
         (scripts/demo-libvirt.py)
"""
