# SPDX-License-Identifier: GPL-2.0-or-later
"""Memory sources: what a VM's modified memory is made of.

A source is one module in this package that defines

  NAME = "guest-agent"
  def available(options) -> bool
      whether it can answer for this VM (e.g. a QMP socket was given)
  def collect(options, progress) -> dict
      the JSON document's "memory" member (guest_agent.py describes it)

and is listed in SOURCES below. collect() returns the first available
source's answer, or None: the JSON document's "memory" member is then null.
"""

import importlib

SOURCES = ["guest_agent"]   # modules of this package, preferred first


def collect(options, progress=lambda msg: None):
    for name in SOURCES:
        source = importlib.import_module(f"{__name__}.{name}")
        if source.available(options):
            progress(f"memory: asking {source.NAME}")
            return source.collect(options, progress)
    return None
