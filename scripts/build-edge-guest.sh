#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds the edge guest of the benchmarks from Debian packages, cached by
# content in OUTDIR (default build/edge):
#   disk.raw     raw ext4 root filesystem: Debian bookworm minbase
#                (mmdebstrap, with this machine's own apt sources), the
#                cloud kernel's modules, tests/edge-guest/init as its init
#   repo/        a flat apt repository the guest installs its applications
#                from over QEMU user networking: our packages handoff-face,
#                handoff-ocr and handoff-physics (tests/edge-guest/apps) and
#                every Debian package they need that minbase lacks
#   edge.env     facts for the harness (paths, kernel command line, memory)
# It boots with the test guest's kernel and initramfs (build/guest), which
# load the modules and switch to the disk's root (handoff.root=).
#
# Requests the applications answer come from Debian's opencv-doc samples:
# messi5.jpg (a face) and imageTextN.png (a page of text).
#
# Usage: scripts/build-edge-guest.sh [OUTDIR]
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/edge}
cache_root=${QEMU_HANDOFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-handoff}
cache=$cache_root/edge
disk_mib=3072
mem_mib=512
# Application -> Debian packages it needs (beyond minbase).
declare -A app_depends=(
    [face]="python3, python3-opencv, opencv-data"
    [ocr]="python3, tesseract-ocr, tesseract-ocr-eng"
    [physics]=""
)

log() { printf 'build-edge-guest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

"$top/scripts/build-test-guest.sh"
# shellcheck source=/dev/null
. "$top/build/guest/guest.env"

key=$( {
    echo "$GUEST_KERNEL_VERSION $disk_mib $mem_mib ${app_depends[*]}"
    cat "$0" "$top/tests/edge-guest/init" "$top"/tests/edge-guest/apps/* \
        "$top"/guest-agent/include/* "$top"/guest-agent/src/*
    sha256sum "$GUEST_INITRD"
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/.key" 2>/dev/null)" = "$key" ] && [ -f "$out/edge.env" ]; then
    log "up to date ($out)"
    exit 0
fi
mkdir -p "$cache" "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# This machine's apt sources: the guest's packages come from where the
# host's do (no host name of ours anywhere).
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sources=/etc/apt/sources.list.d/debian.sources
elif [ -f /etc/apt/sources.list ]; then
    sources=/etc/apt/sources.list
else
    die "no Debian apt source entry on this machine"
fi

log "Debian bookworm minbase root filesystem (mmdebstrap)"
mmdebstrap --quiet --variant=minbase bookworm "$rootfs" "$sources" ||
    die "mmdebstrap failed"

# --- the application repository -------------------------------------------
log "downloading the applications' Debian packages"
repo=$work/repo
mkdir -p "$repo"
wanted=$(printf '%s\n' "${app_depends[@]}" | tr ',' '\n' | tr -d ' ' | sort -u | xargs)
chroot "$rootfs" apt-get update -qq || die "apt-get update in the root filesystem failed"
# shellcheck disable=SC2086
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get install -qq \
    --download-only --no-install-recommends -y $wanted >/dev/null ||
    die "cannot download $wanted"
mv "$rootfs"/var/cache/apt/archives/*.deb "$repo/"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/etc/apt/sources.list.d/* \
       "$rootfs"/etc/apt/sources.list

samples=$(ls "$cache"/opencv-doc_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$samples" ]; then
    log "downloading opencv-doc (the request images)"
    (cd "$cache" && apt-get download opencv-doc >/dev/null 2>&1) ||
        die "apt-get download opencv-doc failed"
    samples=$(ls "$cache"/opencv-doc_*.deb | head -n 1)
fi
dpkg-deb --fsys-tarfile "$samples" |
    tar -x -C "$work" ./usr/share/doc/opencv-doc/examples/data/messi5.jpg \
        ./usr/share/doc/opencv-doc/examples/data/imageTextN.png
sample_dir=$work/usr/share/doc/opencv-doc/examples/data

# One package per application: its service, the request it is sent, and
# its description for the guest's init (PORT, REQUEST, SERVICE).
make_app() {   # make_app APP PORT SERVICE_PROGRAM [REQUEST_FILE]
    local app=$1 port=$2 service=$3 request=${4:-} pkg=$work/pkg-$1
    local lib=$pkg/usr/lib/handoff-edge share=$pkg/usr/share/handoff-edge
    local line=status
    mkdir -p "$pkg/DEBIAN" "$lib/apps" "$share"
    install -m 0755 "$service" "$lib/$app-service"
    if [ -n "$request" ]; then
        line=/usr/share/handoff-edge/$app.${request##*.}
        install -m 0644 "$request" "$pkg$line"
    fi
    cat >"$lib/apps/$app" <<EOF
PORT=$port
REQUEST=$line
SERVICE="/usr/lib/handoff-edge/$app-service --port $port"
EOF
    cat >"$pkg/DEBIAN/control" <<EOF
Package: handoff-$app
Version: 1.0
Architecture: amd64
Maintainer: qemu-handoff developers <qemu-handoff@localhost>
Depends: ${app_depends[$app]:-base-files}
Description: qemu-handoff edge guest application: $app
 A service answering requests on port $port, for the handoff benchmarks.
EOF
    dpkg-deb --root-owner-group -Zxz --build "$pkg" \
        "$repo/handoff-${app}_1.0_amd64.deb" >/dev/null
}
g++ -std=c++20 -O2 -static -pthread -Wall -Wextra -o "$work/physics-service" \
    "$top/tests/edge-guest/apps/physics.cc" || die "cannot build physics-service"
apps=$top/tests/edge-guest/apps
make_app face 8001 "$apps/face-service.py" "$sample_dir/messi5.jpg"
make_app ocr 8002 "$apps/ocr-service.py" "$sample_dir/imageTextN.png"
make_app physics 8003 "$work/physics-service"
(cd "$repo" && dpkg-scanpackages --multiversion . /dev/null >Packages 2>/dev/null) ||
    die "dpkg-scanpackages failed"
log "repository: $(ls "$repo"/*.deb | wc -l) packages, $(du -sh "$repo" | cut -f1)"

# --- the root filesystem ----------------------------------------------------
kdeb=$(ls "$cache_root/guest/linux-image-${GUEST_KERNEL_VERSION}"_*.deb 2>/dev/null | head -n 1)
[ -n "$kdeb" ] || die "the kernel package is not in $cache_root/guest"
# Into merged /usr: the package's /lib must not replace the lib symlink.
dpkg-deb --fsys-tarfile "$kdeb" | tar -x --keep-directory-symlink -C "$rootfs"
install -m 0755 "$top/tests/edge-guest/init" "$rootfs/sbin/handoff-edge-init"
# The guest agent: the module comes with the test guest's initramfs, which
# loads it before switching to this disk (the disk has no kmod to load
# modules with); the daemon goes on the disk, where init starts it.
zcat "$GUEST_INITRD" | cpio -i --quiet --to-stdout etc/modules |
    grep -qx 'extra/handoff_free_pages.ko' ||
    die "$GUEST_INITRD does not load the guest agent's module (rebuild it: scripts/build-test-guest.sh)"
g++ -std=c++20 -O2 -static -Wall -Wextra -I"$top/guest-agent/include" \
    -o "$rootfs/usr/local/sbin/handoff-agent" "$top"/guest-agent/src/*.cc ||
    die "cannot build the guest agent"
mkdir -p "$rootfs/usr/lib/handoff-edge/apps"
echo edge >"$rootfs/etc/hostname"

log "making a ${disk_mib} MiB ext4 disk from $(du -sh "$rootfs" | cut -f1) of files"
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -d "$rootfs" -L edge-root \
    -b 4096 -U 5e1f0c4a-6a3d-4d7e-9b8e-0f00dba5e001 \
    -E lazy_itable_init=0,lazy_journal_init=0,hash_seed=7a1c0fbe-3b44-4d5c-8d4a-95c1b7e1f00e \
    "$work/disk.raw" "${disk_mib}M"

rm -rf "$out/repo"
mv "$repo" "$out/repo"
mv "$work/disk.raw" "$out/disk.raw"
cat >"$out/edge.env" <<EOF
# Written by scripts/build-edge-guest.sh
EDGE_DISK=$out/disk.raw
EDGE_REPO=$out/repo
EDGE_MEM_MIB=$mem_mib
EDGE_APPS="${!app_depends[*]}"
EDGE_APPEND="console=ttyS0 quiet loglevel=3 panic=-1 handoff.root=/sbin/handoff-edge-init"
EOF
echo "$key" >"$out/.key"
log "done: $out"
