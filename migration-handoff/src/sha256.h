// SPDX-License-Identifier: GPL-2.0-or-later
//
// SHA-256, the hash a segmented stream (stream version 3) authenticates
// its table part and segments with: a cryptographic hash, unlike the
// XXH3 checks of frames, because the root a caller trusts is compared
// with it. Computed by GnuTLS, which QEMU links already.
#ifndef HANDOFF_SHA256_H
#define HANDOFF_SHA256_H

#include <array>
#include <cstddef>
#include <cstdint>

#include "handoff.h"
#include "status.h"

namespace handoff {

// A root is one of these (HANDOFF_ROOT_SIZE): one constant for both.
inline constexpr size_t kSha256Size = HANDOFF_ROOT_SIZE;
using Sha256Digest = std::array<uint8_t, kSha256Size>;

// SHA-256 of @len bytes at @data into *@out; HANDOFF_E_INTERNAL if GnuTLS
// refuses (it does not for SHA-256 unless its library is broken).
Status Sha256(const void* data, size_t len, Sha256Digest* out);

}  // namespace handoff

#endif  // HANDOFF_SHA256_H
