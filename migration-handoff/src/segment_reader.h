// SPDX-License-Identifier: GPL-2.0-or-later
//
// What a decoder knows of a segmented stream (stream version 3) while its
// segments arrive: the table, which segments are applied, and the pinned
// data versions that self references of segments still to come may name.
// The decoder's methods for segmented streams are in segment_reader.cc.
#ifndef HANDOFF_SEGMENT_READER_H
#define HANDOFF_SEGMENT_READER_H

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "segment_table.h"

namespace handoff {

// The "segment" whose records are being applied while the table part's
// local records are.
inline constexpr uint32_t kLocalSegment = UINT32_MAX;

struct SegmentState {
  struct Pin {
    std::string bytes;  // the chunk as written
    uint32_t segment;   // where its DATA record was
  };
  using Version = std::pair<uint64_t, uint64_t>;  // (global chunk, seq)

  SegmentTable table;
  std::vector<uint8_t> applied;          // per segment
  uint32_t applied_count = 0;
  uint64_t chunks_recorded = 0;          // by records applied, runs counted
                                         // chunk by chunk
  // Per segment: segments not applied yet that list it as a dependency.
  // Its pins go when this reaches 0 and it is applied itself.
  std::vector<uint32_t> dependents_left;
  std::map<Version, Pin> pins;
  std::map<uint32_t, std::vector<Version>> pins_of;  // by segment
  uint32_t current = kLocalSegment;      // segment being applied
  uint32_t current_flags = 0;            // its kSegmentFlag* bits
  bool fed = false;                      // read by handoff_decoder_feed
  uint32_t next_fed = 0;                 // feed: next segment in the file
};

}  // namespace handoff

#endif  // HANDOFF_SEGMENT_READER_H
