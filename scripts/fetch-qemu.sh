#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Lays out the forked QEMU source tree: Debian bookworm's qemu source package
# (Debian's own patch series applied by dpkg-source), then our patch queue
# (qemu/patches/series), then our new QEMU-side files (qemu/overlay/).
#
# Idempotent: the tree is re-extracted only when the patch queue changes;
# overlay files are copied only when their content differs, so an unchanged
# rerun leaves every mtime alone and ninja has nothing to do.
#
# Usage: scripts/fetch-qemu.sh [TREE]     (default: build/src/qemu)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
tree=${1:-$top/build/src/qemu}
cache=${QEMU_HANDOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-handoff}/qemu-source
# The dfsg orig tarball does not move with Debian's +deb12uN security updates.
orig_sha256=91aca71520040edc40b8d437aa3004dae614f58e286cf653ee8996c07af2962f

log() { printf 'fetch-qemu: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$cache"

dsc=$(ls "$cache"/qemu_*.dsc 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$dsc" ]; then
    "$top/scripts/enable-deb-src.sh"
    log "downloading Debian's qemu source package into $cache"
    (cd "$cache" && apt-get source --download-only qemu >/dev/null 2>"$cache/apt-get.log") ||
        die "apt-get source qemu failed; see $cache/apt-get.log"
    dsc=$(ls "$cache"/qemu_*.dsc | sort -V | tail -n 1)
fi

orig=$(ls "$cache"/qemu_*.orig.tar.xz)
echo "$orig_sha256  $orig" | sha256sum --check --status ||
    die "SHA-256 of $orig is not $orig_sha256: refusing an unknown upstream tarball"

# The stamp covers everything that decides the tree's content except the
# overlay, which is synced file by file below.
stamp_want=$( {
    basename "$dsc"
    cat "$top/qemu/patches/series"
    while read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        sha256sum "$top/qemu/patches/$p"
    done <"$top/qemu/patches/series"
} | sha256sum | cut -d' ' -f1)

if [ "$(cat "$tree/.qemu-handoff-stamp" 2>/dev/null)" != "$stamp_want" ]; then
    log "extracting $(basename "$dsc") with Debian's patch series"
    rm -rf "$tree" "$tree.tmp"
    mkdir -p "$(dirname "$tree")"
    dpkg-source --no-check --no-copy -x "$dsc" "$tree.tmp" \
        >"$cache/dpkg-source.log" 2>&1 ||
        die "dpkg-source failed; see $cache/dpkg-source.log"
    while read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        log "applying qemu/patches/$p"
        patch -d "$tree.tmp" -p1 --quiet --forward <"$top/qemu/patches/$p" ||
            die "qemu/patches/$p does not apply to $(basename "$dsc")"
    done <"$top/qemu/patches/series"
    echo "$stamp_want" >"$tree.tmp/.qemu-handoff-stamp"
    mv "$tree.tmp" "$tree"
fi

# Our new files: copied in place, touching only those that changed.
(cd "$top/qemu/overlay" && find . -type f) | while read -r f; do
    if ! cmp -s "$top/qemu/overlay/$f" "$tree/$f"; then
        mkdir -p "$(dirname "$tree/$f")"
        cp "$top/qemu/overlay/$f" "$tree/$f"
    fi
done

log "tree ready: $tree ($(cat "$tree/VERSION"), $(basename "$dsc" .dsc))"
