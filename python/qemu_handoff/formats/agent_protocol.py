# SPDX-License-Identifier: GPL-2.0-or-later
"""The guest agent's wire constants, read from their one definition:
guest-agent/include/handoff_agent_protocol.h (QEMU and the agent compile
it). A constant renamed or dropped there fails here by name."""

import os
import re

from ..paths import TOP

HEADER = os.path.join(TOP, "guest-agent", "include",
                      "handoff_agent_protocol.h")

_DEFINE = re.compile(r"^#define (HANDOFF_AGENT_\w+) (.+?)\s*(/\*.*)?$", re.M)
# An integer as the header writes them: 0x47414848u, 1u, (1ull << 28).
_INTEGER = re.compile(r"\(?(0x[0-9a-fA-F]+|\d+)u?l{0,2}(?: << (\d+))?\)?")
_CLASS = re.compile(r"^\s*HANDOFF_PAGE_(\w+) = (\d+),\s*/\* (.*?) \*/", re.M)


def _read():
    with open(HEADER) as f:
        text = f.read()
    defines = {}
    for name, value, _ in _DEFINE.findall(text):
        value = value.strip()
        if value.startswith('"'):
            defines[name] = value.strip('"')
        else:
            m = _INTEGER.fullmatch(value)
            assert m, f"{HEADER}: {name}: {value}: not an integer this reads"
            defines[name] = int(m.group(1), 0) << int(m.group(2) or 0)
    classes = {int(n): (name.lower(), comment)
               for name, n, comment in _CLASS.findall(text)}
    # Every class this reads, none skipped: as many as the enum counts.
    count = len(re.findall(r"^\s*HANDOFF_PAGE_\w+ = \d+,", text, re.M))
    assert sorted(classes) == list(range(count)), \
        f"{HEADER}: HandoffAgentPageClass is not what this reads"
    return defines, [classes[i] for i in range(len(classes))]


_DEFINES, PAGE_CLASSES = _read()
PORT_NAME = _DEFINES["HANDOFF_AGENT_PORT_NAME"]
MAGIC = _DEFINES["HANDOFF_AGENT_MAGIC"]
CLASSES_MAGIC = _DEFINES["HANDOFF_AGENT_CLASSES_MAGIC"]
VERSION = _DEFINES["HANDOFF_AGENT_VERSION"]
MAX_EXTENTS = _DEFINES["HANDOFF_AGENT_MAX_EXTENTS"]
# PAGE_CLASSES: [(name, what the header says it holds)], by class number.
PAGE_KERNEL = [n for n, _ in PAGE_CLASSES].index("kernel")
