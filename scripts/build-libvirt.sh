#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds the libvirt fork: Debian bookworm's libvirt 9.0 source package with
# our patch queue (libvirt/patches, new files in libvirt/overlay, laid out by
# scripts/fetch-fork.sh) into build/libvirt, installed under
# build/libvirt/prefix. Only what `virsh migrate --handoff` needs is built:
# the client library, the remote driver, the QEMU driver, the monolithic
# libvirtd and virsh. Docs, tests and every other driver are off.
#
# The daemons it installs are run by tests/lib/libvirt_hosts.py, each in a
# mount namespace of its own so that two of them are two hosts.
#
# Usage: scripts/build-libvirt.sh      (JOBS=N sets ninja's parallelism)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build
jobs=${JOBS:-$(nproc)}
src=$build/src/libvirt
out=$build/libvirt
prefix=$out/prefix

log() { printf 'build-libvirt: %s\n' "$*" >&2; }

"$top/scripts/fetch-fork.sh" libvirt "$src"

# QEMU runs as root with no security driver: the test hosts share one
# machine and one user (libvirt's own qemu.conf, written per host, says so).
options=(
    --prefix="$prefix" --libdir=lib -Dsystem=false
    --buildtype=debugoptimized -Dwerror=false
    -Ddocs=disabled -Dtests=disabled -Dexpensive_tests=disabled
    -Dnls=disabled -Dbash_completion=disabled -Dinit_script=none
    -Ddriver_qemu=enabled -Ddriver_remote=enabled -Ddriver_libvirtd=enabled
    -Dyajl=enabled -Dqemu_user=root -Dqemu_group=root
    -Ddriver_bhyve=disabled -Ddriver_esx=disabled -Ddriver_hyperv=disabled
    -Ddriver_interface=disabled -Ddriver_libxl=disabled -Ddriver_lxc=disabled
    -Ddriver_ch=disabled -Ddriver_network=disabled -Ddriver_openvz=disabled
    -Ddriver_secrets=disabled -Ddriver_test=disabled -Ddriver_vbox=disabled
    -Ddriver_vmware=disabled -Ddriver_vz=disabled
    -Dstorage_dir=disabled -Dstorage_disk=disabled -Dstorage_fs=disabled
    -Dstorage_gluster=disabled -Dstorage_iscsi=disabled
    -Dstorage_iscsi_direct=disabled -Dstorage_lvm=disabled
    -Dstorage_mpath=disabled -Dstorage_rbd=disabled -Dstorage_scsi=disabled
    -Dstorage_vstorage=disabled -Dstorage_zfs=disabled
    -Dapparmor=disabled -Dsecdriver_apparmor=disabled
    -Dapparmor_profiles=disabled -Dselinux=disabled
    -Dsecdriver_selinux=disabled -Dpolkit=disabled -Dfirewalld=disabled
    -Dfirewalld_zone=disabled -Dsasl=disabled -Dlibssh=disabled
    -Dlibssh2=disabled -Dwireshark_dissector=disabled -Dsanlock=disabled
    -Ddtrace=disabled -Dnss=disabled -Dhost_validate=disabled
    -Dlogin_shell=disabled -Dsysctl_config=disabled -Dnumad=disabled
    -Dudev=disabled -Dpciaccess=disabled -Dlibpcap=disabled
    -Dglusterfs=disabled -Dlibiscsi=disabled -Dcurl=disabled
)
config_key=$(printf '%s\n' "${options[@]}" | sha256sum | cut -d' ' -f1)

export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
if [ ! -f "$out/build.ninja" ] ||
   [ "$(cat "$out/.configure-key" 2>/dev/null)" != "$config_key" ]; then
    log "configuring libvirt $(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)"
    rm -rf "$out" && mkdir -p "$out"
    meson setup "$out" "$src" "${options[@]}" >"$out.configure.log" 2>&1 || {
        tail -n 30 "$out.configure.log" >&2
        log "error: configure failed; see $out.configure.log"
        exit 1
    }
    mv "$out.configure.log" "$out/configure.log"
    echo "$config_key" >"$out/.configure-key"
fi

log "building with $jobs jobs"
start=$(date +%s)
ninja -C "$out" -j "$jobs" >"$out/ninja.log" 2>&1 || {
    grep -E 'error|FAILED' "$out/ninja.log" | head -n 30 >&2
    log "error: libvirt build failed; see build/libvirt/ninja.log"
    exit 1
}
meson install -C "$out" --quiet --only-changed >"$out/install.log" 2>&1 || {
    tail -n 20 "$out/install.log" >&2
    log "error: install into $prefix failed; see build/libvirt/install.log"
    exit 1
}
log "done in $(( $(date +%s) - start )) s: $("$prefix/bin/virsh" --version) in $prefix"
