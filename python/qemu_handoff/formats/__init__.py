# SPDX-License-Identifier: GPL-2.0-or-later
"""Readers of what the C side writes, one module per format.

manifest        a base's base.json (QEMU's handoff-manifest.c writes and
                parses it)
overlay         a VM overlay file (QEMU's handoff-overlay-*.c; layout in
                docs/overlay-format.md)
agent_protocol  the guest agent's wire protocol, read from its C header
                (guest-agent/include/handoff_agent_protocol.h)
"""
