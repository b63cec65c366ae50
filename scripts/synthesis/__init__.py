# SPDX-License-Identifier: GPL-2.0-or-later
"""VM synthesis: overlays a cloudlet turns into running VMs.

overlay_file  the overlay file layout (QEMU writes it: handoff-overlay-save)
launcher      a QEMU command line from an overlay's description, and the
              QEMU process that loads the overlay
service       the cloudlet's synthesis service (handoff-synthesis.py serve)
client        sending an overlay to it (handoff-synthesis.py synthesize)
qmp           the QMP client all of these (and the tests) use
"""
