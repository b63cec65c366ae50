#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Lays out a forked source tree: Debian bookworm's source package of PACKAGE
# (Debian's own patch series applied by dpkg-source), then our patch queue
# (PACKAGE/patches/series), then our new files (PACKAGE/overlay/, if any).
# The forks are qemu and libvirt; neither's source is ever committed.
#
# Idempotent: the tree is re-extracted only when the patch queue changes;
# overlay files are copied only when their content differs, so an unchanged
# rerun leaves every mtime alone and ninja has nothing to do.
#
# Usage: scripts/fetch-fork.sh PACKAGE [TREE]   (default: build/src/PACKAGE)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
package=${1:?usage: fetch-fork.sh qemu|libvirt [TREE]}
tree=${2:-$top/build/src/$package}
cache=${QEMU_HANDOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-handoff}/$package-source

# The upstream tarballs do not move with Debian's +deb12uN security updates
# (the dfsg one for qemu): pin them, take Debian's patches as they come.
case "$package" in
qemu)    orig_sha256=91aca71520040edc40b8d437aa3004dae614f58e286cf653ee8996c07af2962f ;;
libvirt) orig_sha256=deca5cff1b7baac297bca9663907c61f71a47183371dc7ac019c107806d5435a ;;
*)       echo "fetch-fork: no fork of '$package'" >&2; exit 2 ;;
esac
patches=$top/$package/patches
overlay=$top/$package/overlay

log() { printf 'fetch-fork: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$cache"

dsc=$(ls "$cache/${package}"_*.dsc 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$dsc" ]; then
    "$top/scripts/enable-deb-src.sh"
    log "downloading Debian's $package source package into $cache"
    (cd "$cache" && apt-get source --download-only "$package" >/dev/null 2>"$cache/apt-get.log") ||
        die "apt-get source $package failed; see $cache/apt-get.log"
    dsc=$(ls "$cache/${package}"_*.dsc | sort -V | tail -n 1)
fi

orig=$(ls "$cache/${package}"_*.orig.tar.xz)
echo "$orig_sha256  $orig" | sha256sum --check --status ||
    die "SHA-256 of $orig is not $orig_sha256: refusing an unknown upstream tarball"

# The stamp covers everything that decides the tree's content except the
# overlay, which is synced file by file below.
stamp_want=$( {
    basename "$dsc"
    cat "$patches/series"
    while read -r p; do
        case "$p" in ''|'#'*) continue ;; esac
        sha256sum "$patches/$p"
    done <"$patches/series"
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
        log "applying $package/patches/$p"
        patch -d "$tree.tmp" -p1 --quiet --forward <"$patches/$p" ||
            die "$package/patches/$p does not apply to $(basename "$dsc")"
    done <"$patches/series"
    echo "$stamp_want" >"$tree.tmp/.qemu-handoff-stamp"
    mv "$tree.tmp" "$tree"
fi

# Our new files: copied in place, touching only those that changed.
if [ -d "$overlay" ]; then
    (cd "$overlay" && find . -type f) | while read -r f; do
        if ! cmp -s "$overlay/$f" "$tree/$f"; then
            mkdir -p "$(dirname "$tree/$f")"
            cp "$overlay/$f" "$tree/$f"
        fi
    done
fi

log "tree ready: $tree ($(basename "$dsc" .dsc))"
