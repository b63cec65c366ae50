// SPDX-License-Identifier: GPL-2.0-or-later
#include "fuzz_target.h"

namespace handoff_fuzz {

uint64_t InterestingValue(Rng* rng, uint64_t old) {
  // Chunk counts of the fuzz geometries sit among the small values;
  // 2^46 is the region size limit, the rest are type boundaries.
  static const uint64_t kValues[] = {
      0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128,
      255, 256, 4095, 4096, 4097, 65535, 65536, 0x7fffffffull,
      0xffffffffull, 0x100000000ull, 1ull << 40, 1ull << 46,
      (1ull << 46) + 4096, 1ull << 63, ~0ull, ~0ull - 1};
  switch (rng->Below(4)) {
    case 0:
      return kValues[rng->Below(sizeof(kValues) / sizeof(kValues[0]))];
    case 1:
      return old + 1 + rng->Below(4);
    case 2:
      return old - 1 - rng->Below(4);
    default:
      return rng->OneIn(2) ? rng->Next() : rng->Below(64);
  }
}

}  // namespace handoff_fuzz
