#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `apt-get source` needs deb-src entries. Many images ship only binary
# entries; derive source entries from the machine's own Debian entries (same
# mirrors, suites and keys) instead of naming any host ourselves.
set -euo pipefail

out=/etc/apt/sources.list.d/qemu-handoff-deb-src.sources
legacy_out=/etc/apt/sources.list.d/qemu-handoff-deb-src.list

if apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx Sources; then
    exit 0
fi

if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types:.*$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$out"
elif [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list >"$legacy_out"
else
    echo "enable-deb-src: no Debian apt source entry found to derive deb-src from" >&2
    exit 1
fi
echo "enable-deb-src: added source entries derived from this machine's apt sources" >&2
apt-get update -qq
