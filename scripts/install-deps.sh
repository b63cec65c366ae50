#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Installs, from Debian's archive, whatever of the project's build and test
# dependencies is missing. Does nothing (and needs no network) when all are
# present.
set -euo pipefail

packages=(
    # toolchain and build systems
    build-essential pkg-config dpkg-dev patch ccache meson ninja-build
    python3 python3-pytest clang libclang-rt-14-dev
    # property tests: the synthesis service's command-line generator
    python3-hypothesis
    # QEMU's build dependencies for the configuration we build
    libglib2.0-dev libpixman-1-dev libfdt-dev libzstd-dev libaio-dev
    libslirp-dev libcap-ng-dev libattr1-dev flex bison
    # TLS between cloudlets (tls-creds-x509) and the certificates tests make
    libgnutls28-dev gnutls-bin
    # -sandbox: the synthesis service confines the QEMU of every VM it
    # launches with seccomp, as Debian builds its QEMU
    libseccomp-dev
    # the engine's libraries and the unit-test framework
    liblzma-dev zlib1g-dev libxxhash-dev libcunit1-dev
    # firmware: the dfsg QEMU source ships none
    seabios ipxe-qemu qemu-system-data
    # the test guest and the emulated WAN link; the guest agent's kernel
    # module builds against the cloud kernel's headers
    e2fsprogs cpio xz-utils gzip iproute2 kmod linux-headers-cloud-amd64
    # a test holds one QEMU thread at a source line to open a race window
    gdb
    # Debian's own QEMU: a stock binary libvirt must refuse --handoff for
    qemu-system-x86
    # the libvirt fork (QEMU driver, libvirtd, virsh) and its test hosts
    libxml2-dev libxml2-utils xsltproc libtirpc-dev rpcsvc-proto
    libyajl-dev libnl-3-dev libnl-route-3-dev libreadline-dev libblkid-dev
    util-linux
    # the benchmarks: the edge guest's root filesystem, plots, whole-VM sizes
    mmdebstrap python3-matplotlib zstd
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present" >&2
    exit 0
fi

sudo=
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
        echo "install-deps: missing ${missing[*]}; run as root to install" >&2
        exit 1
    }
    sudo=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
