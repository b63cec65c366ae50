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
# The daemons it installs are run by python/qemu_handoff/libvirt_hosts.py, each in a
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
    -Dinit_script=none -Dqemu_user=root -Dqemu_group=root
    -Ddriver_qemu=enabled -Ddriver_remote=enabled -Ddriver_libvirtd=enabled
    -Dyajl=enabled
)
# Everything else off: other drivers, storage backends, security drivers,
# docs, tests and optional libraries the QEMU driver can do without.
for d in bhyve esx hyperv interface libxl lxc ch network openvz secrets \
         test vbox vmware vz; do
    options+=("-Ddriver_$d=disabled")
done
for s in dir disk fs gluster iscsi iscsi_direct lvm mpath rbd scsi vstorage zfs; do
    options+=("-Dstorage_$s=disabled")
done
for f in docs tests expensive_tests nls bash_completion apparmor \
         secdriver_apparmor apparmor_profiles selinux secdriver_selinux \
         polkit firewalld firewalld_zone sasl libssh libssh2 \
         wireshark_dissector sanlock dtrace nss host_validate login_shell \
         sysctl_config numad udev pciaccess libpcap glusterfs libiscsi curl; do
    options+=("-D$f=disabled")
done
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
