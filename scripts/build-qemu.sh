#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Builds the fork: libhandoff first (top-level meson, build/handoff), then the
# patched QEMU tree (build/src/qemu) out of tree in build/qemu, linking the
# engine through build/handoff/migration-handoff/handoff.pc.
#
# Only what the project uses is built: qemu-system-x86_64, qemu-img and
# qemu-io (tests write into images with it).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build
jobs=${JOBS:-$(nproc)}
version=$(cat "$top/VERSION")

log() { printf 'build-qemu: %s\n' "$*" >&2; }

# QEMU's configure hands meson explicit compilers, so meson's own ccache
# detection never kicks in: name ccache in the compiler commands instead.
compilers=()
if command -v ccache >/dev/null; then
    log "using ccache ($(ccache --version | head -n 1))"
    compilers=(--cc="ccache cc" --cxx="ccache c++")
fi

if [ ! -f "$build/handoff/build.ninja" ]; then
    meson setup "$build/handoff" "$top" >/dev/null
fi
log "building libhandoff and our tools"
ninja -C "$build/handoff" -j "$jobs" >/dev/null

"$top/scripts/fetch-fork.sh" qemu "$build/src/qemu"

debian_version=$(dpkg-parsechangelog -l "$build/src/qemu/debian/changelog" -S Version)
export PKG_CONFIG_PATH=$build/handoff/migration-handoff${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}

# Options that decide the configuration; a change reconfigures from scratch.
configure_args=(
    "${compilers[@]}"
    --target-list=x86_64-softmmu
    --without-default-features
    --enable-tcg --enable-kvm
    --enable-tools
    --enable-zstd --enable-linux-aio --enable-slirp --enable-fdt=system
    --enable-gnutls --enable-seccomp
    --enable-attr --enable-cap-ng --enable-malloc-trim
    --enable-live-block-migration
    --disable-docs --disable-user
    --with-pkgversion="qemu-handoff $version, Debian $debian_version"
    --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
)
# So does a change of what pkg-config tells QEMU about our libraries.
config_key=$( (printf '%s\n' "${configure_args[@]}"
               cat "$build/handoff/migration-handoff/handoff.pc") |
             sha256sum | cut -d' ' -f1)

mkdir -p "$build/qemu"
if [ ! -f "$build/qemu/build.ninja" ] ||
   [ "$(cat "$build/qemu/.configure-key" 2>/dev/null)" != "$config_key" ]; then
    log "configuring QEMU $(cat "$build/src/qemu/VERSION") (Debian $debian_version)"
    rm -rf "$build/qemu" && mkdir -p "$build/qemu"
    (cd "$build/qemu" && "$build/src/qemu/configure" "${configure_args[@]}" \
        >configure.log 2>&1) || {
        tail -n 30 "$build/qemu/configure.log" >&2
        log "error: configure failed; see build/qemu/configure.log"
        exit 1
    }
    echo "$config_key" >"$build/qemu/.configure-key"
fi

# ninja does not see our libraries as inputs of the link (they come in via
# pkg-config -l flags), so a newer library forces the relink here.
bin=$build/qemu/qemu-system-x86_64
for lib in "$build/handoff/migration-handoff/libhandoff.a" \
           "$build/handoff/block-trim/libhandoff-trim.a"; do
    if [ -f "$bin" ] && [ "$lib" -nt "$bin" ]; then
        rm -f "$bin"
    fi
done

log "building qemu-system-x86_64, qemu-img and qemu-io with $jobs jobs"
start=$(date +%s)
ninja -C "$build/qemu" -j "$jobs" qemu-system-x86_64 qemu-img qemu-io >"$build/qemu/ninja.log" 2>&1 || {
    grep -E 'error|FAILED' "$build/qemu/ninja.log" | head -n 30 >&2
    log "error: QEMU build failed; see build/qemu/ninja.log"
    exit 1
}
log "done in $(( $(date +%s) - start )) s: $("$bin" --version | head -n 1)"
