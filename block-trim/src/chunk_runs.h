// SPDX-License-Identifier: GPL-2.0-or-later
//
// Whole-chunk runs over the discarded extents: what the handoff sender may
// treat as discarded. Only chunks lying wholly inside one extent count
// (extents never touch, so no chunk can be covered by two of them): a
// discard smaller than a qcow2 cluster leaves the cluster's data in place.
#ifndef HANDOFF_TRIM_CHUNK_RUNS_H
#define HANDOFF_TRIM_CHUNK_RUNS_H

#include <cstdint>

#include "extent_set.h"

namespace handoff::trim {

// Chunks [first, first + count), count >= 1.
struct ChunkRun {
  uint64_t first;
  uint64_t count;
};

// Finds the first maximal run of whole chunks of @chunk_size (> 0) bytes
// at or after chunk @from_chunk inside @set's extents. Returns false when
// there is none.
bool NextWholeChunkRun(const ExtentSet& set, uint64_t from_chunk,
                       uint32_t chunk_size, ChunkRun* run) noexcept;

}  // namespace handoff::trim

#endif  // HANDOFF_TRIM_CHUNK_RUNS_H
