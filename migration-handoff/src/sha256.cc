// SPDX-License-Identifier: GPL-2.0-or-later
#include "sha256.h"

#include <gnutls/crypto.h>

namespace handoff {

Status Sha256(const void* data, size_t len, Sha256Digest* out) {
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out->data()) < 0)
    return Status(HANDOFF_E_INTERNAL, "GnuTLS refused to compute SHA-256");
  return Status::Ok();
}

}  // namespace handoff
