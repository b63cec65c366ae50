// SPDX-License-Identifier: GPL-2.0-or-later
#include "geometry.h"

#include <algorithm>
#include <set>

namespace handoff {

Geometry::Geometry(std::vector<Region> regions) : regions_(std::move(regions)) {
  first_chunk_.reserve(regions_.size());
  for (const Region& r : regions_) {
    first_chunk_.push_back(total_chunks_);
    total_chunks_ += r.chunks();
  }
}

Status Geometry::Validate() const {
  if (regions_.empty() || regions_.size() > HANDOFF_MAX_REGIONS)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "region count " + std::to_string(regions_.size()) +
                      " outside 1.." + std::to_string(HANDOFF_MAX_REGIONS));
  std::set<std::string> names;
  for (const Region& r : regions_) {
    if (r.name.empty() || r.name.size() > HANDOFF_MAX_REGION_NAME)
      return Status(HANDOFF_E_BAD_GEOMETRY, "region name length " +
                                                std::to_string(r.name.size()) +
                                                " outside 1..63");
    if (!names.insert(r.name).second)
      return Status(HANDOFF_E_BAD_GEOMETRY,
                    "duplicate region name '" + r.name + "'");
    if (r.kind != HANDOFF_REGION_MEMORY && r.kind != HANDOFF_REGION_DISK)
      return Status(HANDOFF_E_BAD_GEOMETRY,
                    "region '" + r.name + "' has unknown kind");
    if (r.size == 0 || r.size % kChunkSize != 0 || r.size > kMaxRegionBytes)
      return Status(HANDOFF_E_BAD_GEOMETRY,
                    "region '" + r.name + "' size " + std::to_string(r.size) +
                        " is not a non-zero multiple of 4096 below 2^46");
  }
  return Status::Ok();
}

void Geometry::Locate(uint64_t global, uint32_t* region,
                      uint64_t* index) const {
  auto it = std::upper_bound(first_chunk_.begin(), first_chunk_.end(), global);
  size_t r = static_cast<size_t>(it - first_chunk_.begin()) - 1;
  *region = static_cast<uint32_t>(r);
  *index = global - first_chunk_[r];
}

bool Geometry::operator==(const Geometry& other) const {
  if (regions_.size() != other.regions_.size()) return false;
  for (size_t i = 0; i < regions_.size(); i++) {
    const Region& a = regions_[i];
    const Region& b = other.regions_[i];
    if (a.name != b.name || a.kind != b.kind || a.size != b.size) return false;
  }
  return true;
}

}  // namespace handoff
