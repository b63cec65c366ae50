// SPDX-License-Identifier: GPL-2.0-or-later
//
// A bounded set of disjoint byte ranges: the discarded extents of one
// disk. Ranges that overlap or touch are merged, so extents never touch
// and a whole chunk always lies inside a single extent.
//
// The bound is kept by dropping the smallest extents. A second index, by
// (length, start), finds them in O(log n). The alternative, scanning all
// extents when over the bound, is O(n) on every new extent once the set is
// full, which is the steady state of a guest that discards scattered small
// ranges; with the default bound that is 65536 entries walked under the
// map's mutex in the guest's I/O path. The index costs one tree node per
// extent (the set holds about 128 bytes per extent in all) for O(log n)
// per call.
//
// Nothing here throws. Reshaping an extent reuses its tree nodes (C++17
// node handles), so only a brand new extent allocates; when that fails the
// set forgets the new extent (Add) or the piece split off (Remove), which
// only loses information, never invents it.
//
// Not thread-safe: trim_map.cc serialises every call.
#ifndef HANDOFF_TRIM_EXTENT_SET_H
#define HANDOFF_TRIM_EXTENT_SET_H

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <utility>

namespace handoff::trim {

// The byte range [start, end), start < end.
struct Extent {
  uint64_t start;
  uint64_t end;
};

class ExtentSet {
 public:
  // @max_extents >= 1.
  explicit ExtentSet(size_t max_extents) noexcept : max_extents_(max_extents) {}

  ExtentSet(const ExtentSet&) = delete;
  ExtentSet& operator=(const ExtentSet&) = delete;

  // Adds [start, end) (start < end), merging it with every extent it
  // overlaps or touches, then drops the smallest extents while over the
  // bound.
  void Add(uint64_t start, uint64_t end) noexcept;

  // Removes [start, end) (start < end) from every extent, splitting one
  // that contains it, then drops the smallest extents while over the bound.
  void Remove(uint64_t start, uint64_t end) noexcept;

  // Forgets everything, as asked: not counted as dropped.
  void Clear() noexcept;

  // Forgets everything because it could be stale: counted as dropped.
  void DropAll() noexcept;

  // Calls @visit(const Extent&) on each extent that ends after @pos, in
  // order of start, until it returns true. Returns whether it did.
  template <typename Visit>
  bool VisitFrom(uint64_t pos, Visit&& visit) const {
    auto it = FirstEndingAfter(pos);
    for (; it != by_start_.end(); ++it) {
      if (visit(Extent{it->first, it->second})) return true;
    }
    return false;
  }

  size_t size() const noexcept { return by_start_.size(); }
  size_t max_extents() const noexcept { return max_extents_; }
  uint64_t covered_bytes() const noexcept { return covered_bytes_; }
  uint64_t dropped_extents() const noexcept { return dropped_extents_; }
  uint64_t dropped_bytes() const noexcept { return dropped_bytes_; }

 private:
  using ByStart = std::map<uint64_t, uint64_t>;             // start -> end
  using BySize = std::set<std::pair<uint64_t, uint64_t>>;  // (length, start)

  ByStart::const_iterator FirstEndingAfter(uint64_t pos) const noexcept;
  ByStart::iterator FirstEndingAfter(uint64_t pos) noexcept;
  ByStart::iterator Reshape(ByStart::iterator it, uint64_t start,
                            uint64_t end) noexcept;
  bool InsertNew(uint64_t start, uint64_t end) noexcept;
  ByStart::iterator Erase(ByStart::iterator it) noexcept;
  void Drop(uint64_t bytes) noexcept;
  void EvictOverBound() noexcept;

  const size_t max_extents_;
  ByStart by_start_;
  BySize by_size_;
  uint64_t covered_bytes_ = 0;
  uint64_t dropped_extents_ = 0;
  uint64_t dropped_bytes_ = 0;
};

}  // namespace handoff::trim

#endif  // HANDOFF_TRIM_EXTENT_SET_H
