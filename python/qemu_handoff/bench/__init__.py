# SPDX-License-Identifier: GPL-2.0-or-later
"""The benchmarks; each module's main() is a scripts/bench*.py program.

matrix       handoff versus stock QEMU migration on the edge workloads
             (scripts/bench.py, docs/benchmarks.md)
report       results.json into summary.md and plots
breakdown    the edge VMs' modified state by what it is
synthesis    time to first response of synthesized VMs
free_memory  what free guest memory costs a move
agent_cpu    what the guest agent costs the guest
trim         what discarded blocks cost a handoff
tls          what TLS costs a handoff
"""
