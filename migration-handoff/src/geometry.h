// SPDX-License-Identifier: GPL-2.0-or-later
//
// Geometry: the named regions of a VM (memory and disks) and their sizes,
// in 4 KiB chunks. Chunks are also numbered globally, region after region,
// which is how the base index stores locations.
#ifndef HANDOFF_GEOMETRY_H
#define HANDOFF_GEOMETRY_H

#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace handoff {

inline constexpr uint32_t kChunkSize = 4096;
inline constexpr uint32_t kChunkShift = 12;
inline constexpr uint64_t kMaxRegionBytes = 1ull << 46;  // 64 TiB

struct Region {
  std::string name;
  HandoffRegionKind kind = HANDOFF_REGION_MEMORY;
  uint64_t size = 0;
  uint64_t chunks() const { return size >> kChunkShift; }
};

class Geometry {
 public:
  Geometry() = default;
  explicit Geometry(std::vector<Region> regions);

  // Checks names, kinds and sizes against the format limits.
  Status Validate() const;

  const std::vector<Region>& regions() const { return regions_; }
  size_t region_count() const { return regions_.size(); }
  uint64_t total_chunks() const { return total_chunks_; }
  uint64_t first_chunk(size_t region) const { return first_chunk_[region]; }
  bool Contains(size_t region, uint64_t index) const {
    return region < regions_.size() && index < regions_[region].chunks();
  }
  uint64_t Global(size_t region, uint64_t index) const {
    return first_chunk_[region] + index;
  }
  // Inverse of Global for a valid global chunk number.
  void Locate(uint64_t global, uint32_t* region, uint64_t* index) const;

  bool operator==(const Geometry& other) const;

 private:
  std::vector<Region> regions_;
  std::vector<uint64_t> first_chunk_;
  uint64_t total_chunks_ = 0;
};

}  // namespace handoff

#endif  // HANDOFF_GEOMETRY_H
