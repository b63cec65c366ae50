# SPDX-License-Identifier: GPL-2.0-or-later
"""Memory sources: what a VM's modified memory is made of.

None exists yet. The guest agent (guest-agent/) will be the first: it
knows which guest pages are free, page cache or anonymous. A source is one
module in this package that defines

  NAME = "guest-agent"
  def available(options) -> bool
      whether it can answer for this VM (e.g. the agent's socket exists)
  def collect(options, progress) -> dict
      {"source": NAME, "total_bytes": N, "free_bytes": N,
       "page_cache_bytes": N, "anonymous_bytes": N, ...}

and is listed in SOURCES below. collect() returns the first available
source's answer, or None: the JSON document's "memory" member is then null.
"""

import importlib

SOURCES = []   # module names in this package, in order of preference


def collect(options, progress=lambda msg: None):
    for name in SOURCES:
        source = importlib.import_module(f"{__name__}.{name}")
        if source.available(options):
            progress(f"memory: asking {source.NAME}")
            return source.collect(options, progress)
    return None
