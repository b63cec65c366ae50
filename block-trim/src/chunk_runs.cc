// SPDX-License-Identifier: GPL-2.0-or-later
#include "chunk_runs.h"

#include <algorithm>
#include <limits>

namespace handoff::trim {

bool NextWholeChunkRun(const ExtentSet& set, uint64_t from_chunk,
                       uint32_t chunk_size, ChunkRun* run) noexcept {
  // A chunk starting beyond 2^64 bytes is beyond every disk.
  if (from_chunk > std::numeric_limits<uint64_t>::max() / chunk_size) {
    return false;
  }
  // Extents holding no whole chunk are skipped; each is visited once.
  return set.VisitFrom(from_chunk * chunk_size, [&](const Extent& e) {
    uint64_t first = e.start / chunk_size + (e.start % chunk_size != 0);
    uint64_t end = e.end / chunk_size;  // first chunk reaching past e.end
    first = std::max(first, from_chunk);
    if (first >= end) return false;
    *run = ChunkRun{first, end - first};
    return true;
  });
}

}  // namespace handoff::trim
