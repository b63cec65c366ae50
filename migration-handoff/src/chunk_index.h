// SPDX-License-Identifier: GPL-2.0-or-later
//
// The chunk index of a segmented stream (stream version 3): sorted extents
// saying where each chunk's record is, local (the table part) or remote
// (which segment), so that a destination knows which faults it answers
// itself and which segment to ask for, and any sender finds a guest
// chunk's segment, in O(log n). Chunks no extent covers have no record.
// Stored zstd-compressed in the table part; the decoder checks every
// record against it and that every indexed chunk got one.
#ifndef HANDOFF_CHUNK_INDEX_H
#define HANDOFF_CHUNK_INDEX_H

#include <cstdint>
#include <string>
#include <vector>

#include "geometry.h"
#include "handoff.h"
#include "status.h"

namespace handoff {

inline constexpr size_t kIndexExtentSize = 24;
inline constexpr uint32_t kMaxIndexExtents = 1u << 24;
inline constexpr uint32_t kMaxIndexBytes = 64u << 20;  // compressed

struct IndexExtent {
  uint8_t region = 0;
  uint8_t place = HANDOFF_CHUNK_LOCAL;  // HandoffChunkPlace, never BASE
  uint32_t segment = 0;                 // remote only; 0 when local
  uint64_t first = 0;
  uint64_t count = 0;
};

// Appends @extent, merged with the last one when it continues it.
void AddToIndex(const IndexExtent& extent, std::vector<IndexExtent>* index);

// The compressed bytes of @index.
Status SerializeIndex(const std::vector<IndexExtent>& index, std::string* out);

// Reads @count extents from the @len compressed bytes at @p, checking
// each against @geometry and @segments: sorted, disjoint, inside its
// region, a known place, a segment below @segments when remote (else 0).
// HANDOFF_E_BAD_SEGMENT otherwise; *@chunks is the chunks they cover.
Status ParseIndex(const uint8_t* p, size_t len, uint32_t count,
                  const Geometry& geometry, uint32_t segments,
                  std::vector<IndexExtent>* index, uint64_t* chunks);

// The extent covering chunk @chunk of @region, or null.
const IndexExtent* LocateChunk(const std::vector<IndexExtent>& index,
                               uint32_t region, uint64_t chunk);

}  // namespace handoff

#endif  // HANDOFF_CHUNK_INDEX_H
