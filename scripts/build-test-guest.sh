#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds the test guest from Debian packages only, cached by content:
#   OUTDIR/vmlinuz         Debian's cloud kernel
#   OUTDIR/initrd.img      busybox-static, the kernel modules for virtio and
#                          IDE disks, our workload tool, tests/guest/init
#   OUTDIR/base-disk.raw   raw ext4 (mkfs.ext4 -d, no mount) holding real
#                          files: the kernel package's module tree
#   OUTDIR/guest.env       facts for tests (paths, kernel, append line)
# Downloads are kept in ${QEMU_HANDOFF_CACHE:-~/.cache/qemu-handoff}/guest.
#
# Usage: scripts/build-test-guest.sh [OUTDIR]     (default: build/guest)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/guest}
cache=${QEMU_HANDOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-handoff}/guest
disk_mib=256
guest_modules="virtio_pci virtio_blk virtio_net virtio_console virtio_balloon ata_piix sd_mod"

log() { printf 'build-test-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$cache" "$out"

# The kernel package the cloud metapackage points at today.
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
       awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$kpkg" ] || die "apt-cache knows no linux-image-cloud-amd64 (run apt-get update)"
kver_pkg=$(apt-cache policy "$kpkg" | awk '/Candidate:/ { print $2 }')
bb_ver=$(apt-cache policy busybox-static | awk '/Candidate:/ { print $2 }')

key=$( {
    echo "$kpkg $kver_pkg busybox-static $bb_ver $disk_mib $guest_modules"
    cat "$0" "$top/tests/guest/init" "$top/tests/guest/workload.cc" \
        "$top"/guest-agent/kmod/* "$top"/guest-agent/include/* \
        "$top"/guest-agent/src/*
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/.key" 2>/dev/null)" = "$key" ] && [ -f "$out/guest.env" ]; then
    log "up to date ($out)"
    exit 0
fi

fetch() {   # fetch PACKAGE -> path of its .deb in the cache
    local deb
    deb=$(ls "$cache/$1"_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        log "downloading $1"
        (cd "$cache" && apt-get download "$1" >/dev/null 2>&1) ||
            die "apt-get download $1 failed"
        deb=$(ls "$cache/$1"_*.deb | head -n 1)
    fi
    echo "$deb"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "unpacking $kpkg $kver_pkg and busybox-static $bb_ver"
dpkg-deb -x "$(fetch "$kpkg")" "$work/kernel"
dpkg-deb -x "$(fetch busybox-static)" "$work/busybox"
kver=$(ls "$work/kernel/lib/modules")
moddir=$work/kernel/lib/modules/$kver
# Packages ship no modules.dep: the postinst runs depmod.
depmod -b "$work/kernel" "$kver"

# --- initramfs -----------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,dev,etc,lib/modules,mnt,proc,sys,tmp}
cp "$work/busybox/bin/busybox" "$root/bin/busybox"

# Modules with their dependencies, in load order (modules.dep lists a
# module's dependencies, deepest last).
declare -A seen=()
order=()
add_module() {
    local path=$1 dep
    [ -n "${seen[$path]:-}" ] && return
    seen[$path]=1
    for dep in $(awk -F': ' -v m="$path" '$1 == m { print $2 }' "$moddir/modules.dep"); do
        add_module "$dep"
    done
    order+=("$path")
}
for m in $guest_modules; do
    path=$(awk -F: -v m="/$m.ko" 'index($1, m) == length($1) - length(m) + 1 { print $1; exit }' \
           "$moddir/modules.dep")
    [ -n "$path" ] || die "module $m not in $kpkg"
    add_module "$path"
done
for path in "${order[@]}"; do
    mkdir -p "$root/lib/modules/$(dirname "$path")"
    cp "$moddir/$path" "$root/lib/modules/$path"
    echo "$path" >>"$root/etc/modules"
done
log "modules: $(basename -a "${order[@]}" | tr '\n' ' ')"

g++ -std=c++20 -O2 -static -Wall -Wextra -o "$root/bin/handoff-workload" \
    "$top/tests/guest/workload.cc" || die "cannot build the workload tool"

# The guest agent: its kernel module, built against the guest kernel's
# headers (Debian's linux-headers package of the same ABI, which
# scripts/install-deps.sh installs), loaded last; and its daemon.
kheaders=/usr/src/linux-headers-${kpkg#linux-image-}
[ -d "$kheaders" ] ||
    die "$kheaders missing: apt-get install linux-headers-${kpkg#linux-image-}"
# Laid out as in the tree: the module includes ../include.
mkdir -p "$work/agent"
cp -r "$top"/guest-agent/kmod "$top"/guest-agent/include "$work/agent/"
make -s -C "$kheaders" M="$work/agent/kmod" modules >"$work/kmod.log" 2>&1 ||
    { cat "$work/kmod.log" >&2; die "cannot build the guest agent's module"; }
mkdir -p "$root/lib/modules/extra"
cp "$work/agent/kmod/handoff_free_pages.ko" "$root/lib/modules/extra/"
echo "extra/handoff_free_pages.ko" >>"$root/etc/modules"
g++ -std=c++20 -O2 -static -Wall -Wextra -I"$top/guest-agent/include" \
    -o "$root/bin/handoff-agent" "$top"/guest-agent/src/*.cc ||
    die "cannot build the guest agent"
install -m 0755 "$top/tests/guest/init" "$root/init"

# --- base disk -------------------------------------------------------------
files=$work/disk
mkdir -p "$files"
cp -a "$moddir/kernel" "$files/modules"
# The largest file: the workload copies it into memory and onto the disk.
base_file=$(cd "$files" && find . -type f -printf '%s %P\n' | sort -n | tail -n 1 | cut -d' ' -f2)
echo "$base_file" >"$root/etc/base-file"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -9 >"$work/initrd.img"

log "making a ${disk_mib} MiB ext4 base disk from $(du -sh "$files" | cut -f1) of files"
rm -f "$work/base-disk.raw"
# 4 KiB blocks (mke2fs picks 1 KiB for a disk this small): file pages then
# line up with disk chunks, as on real guests' disks.
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -d "$files" -L handoff-base \
    -b 4096 -i 16384 \
    -U 5e1f0c4a-6a3d-4d7e-9b8e-0f00dba5e000 \
    -E lazy_itable_init=0,lazy_journal_init=0,hash_seed=7a1c0fbe-3b44-4d5c-8d4a-95c1b7e1f00d \
    "$work/base-disk.raw" "${disk_mib}M"

cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz"
mv "$work/initrd.img" "$out/initrd.img"
mv "$work/base-disk.raw" "$out/base-disk.raw"
cat >"$out/guest.env" <<EOF
# Written by scripts/build-test-guest.sh
GUEST_KERNEL=$out/vmlinuz
GUEST_INITRD=$out/initrd.img
GUEST_BASE_DISK=$out/base-disk.raw
GUEST_KERNEL_VERSION=$kver
GUEST_BASE_FILE=$base_file
GUEST_APPEND="console=ttyS0 quiet loglevel=3 panic=-1"
EOF
echo "$key" >"$out/.key"
log "done: $out ($kver, initrd $(du -h "$out/initrd.img" | cut -f1))"
