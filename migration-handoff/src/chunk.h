// SPDX-License-Identifier: GPL-2.0-or-later
//
// Chunk-level primitives: the dedup hash and the zero test. Both run on
// every 4 KiB chunk of a handoff, so they are inline.
#ifndef HANDOFF_CHUNK_H
#define HANDOFF_CHUNK_H

#include <xxhash.h>

#include <cstdint>
#include <cstring>

#include "geometry.h"

namespace handoff {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const Hash128& o) const { return lo == o.lo && hi == o.hi; }
};

inline Hash128 HashChunk(const uint8_t* p) {
  XXH128_hash_t h = XXH3_128bits(p, kChunkSize);
  return Hash128{h.low64, h.high64};
}

inline bool IsZeroChunk(const uint8_t* p) {
  // Comparing the chunk with itself shifted by one word is the fastest
  // portable zero test: memcmp is vectorised and stops at the first
  // non-zero word.
  uint64_t first;
  std::memcpy(&first, p, 8);
  return first == 0 && std::memcmp(p, p + 8, kChunkSize - 8) == 0;
}

// @out = @a XOR @b, a word at a time (the XOR delta of a chunk against
// its base chunk, and back).
inline void XorChunk(const uint8_t* a, const uint8_t* b, uint8_t* out) {
  for (size_t i = 0; i < kChunkSize; i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + i, 8);
    std::memcpy(&y, b + i, 8);
    x ^= y;
    std::memcpy(out + i, &x, 8);
  }
}

}  // namespace handoff

#endif  // HANDOFF_CHUNK_H
