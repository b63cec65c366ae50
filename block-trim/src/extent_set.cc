// SPDX-License-Identifier: GPL-2.0-or-later
#include "extent_set.h"

#include <algorithm>
#include <iterator>

namespace handoff::trim {
namespace {

// Shared by the const and mutable lookups. An extent ending after @pos
// either starts after it or is the last one starting at or before it.
template <typename Map>
auto FirstEndingAfterIn(Map& by_start, uint64_t pos) {
  auto it = by_start.upper_bound(pos);
  if (it != by_start.begin()) {
    auto prev = std::prev(it);
    if (prev->second > pos) return prev;
  }
  return it;
}

}  // namespace

ExtentSet::ByStart::const_iterator ExtentSet::FirstEndingAfter(
    uint64_t pos) const noexcept {
  return FirstEndingAfterIn(by_start_, pos);
}

ExtentSet::ByStart::iterator ExtentSet::FirstEndingAfter(
    uint64_t pos) noexcept {
  return FirstEndingAfterIn(by_start_, pos);
}

void ExtentSet::Add(uint64_t start, uint64_t end) noexcept {
  // The first extent that overlaps or touches [start, end) on the left.
  auto it = FirstEndingAfter(start ? start - 1 : 0);
  if (it == by_start_.end() || it->first > end) {
    InsertNew(start, end);
  } else {
    uint64_t new_start = std::min(it->first, start);
    uint64_t new_end = std::max(it->second, end);
    auto next = std::next(it);
    while (next != by_start_.end() && next->first <= new_end) {
      new_end = std::max(new_end, next->second);
      next = Erase(next);
    }
    Reshape(it, new_start, new_end);
  }
  EvictOverBound();
}

void ExtentSet::Remove(uint64_t start, uint64_t end) noexcept {
  auto it = FirstEndingAfter(start);
  while (it != by_start_.end() && it->first < end) {
    uint64_t s = it->first, e = it->second;
    if (s < start) {
      it = Reshape(it, s, start);
      if (e > end) {
        // A split: if the right piece cannot be allocated it is forgotten,
        // which is safe; the removed range is gone either way.
        InsertNew(end, e);
        break;
      }
      ++it;
    } else if (e > end) {
      Reshape(it, end, e);
      break;
    } else {
      it = Erase(it);
    }
  }
  EvictOverBound();
}

void ExtentSet::Clear() noexcept {
  by_start_.clear();
  by_size_.clear();
  covered_bytes_ = 0;
}

void ExtentSet::DropAll() noexcept {
  dropped_extents_ += by_start_.size();
  dropped_bytes_ += covered_bytes_;
  Clear();
}

// Gives @it the range [start, end) without allocating: both tree nodes are
// extracted, rewritten and reinserted. Callers keep the order of starts, so
// the extent stays between the same neighbours.
ExtentSet::ByStart::iterator ExtentSet::Reshape(ByStart::iterator it,
                                                uint64_t start,
                                                uint64_t end) noexcept {
  uint64_t old_start = it->first, old_end = it->second;
  auto size_node = by_size_.extract({old_end - old_start, old_start});
  size_node.value() = {end - start, start};
  by_size_.insert(std::move(size_node));
  covered_bytes_ += (end - start) - (old_end - old_start);
  if (start == old_start) {
    it->second = end;
    return it;
  }
  auto node = by_start_.extract(it);
  node.key() = start;
  node.mapped() = end;
  return by_start_.insert(std::move(node)).position;
}

bool ExtentSet::InsertNew(uint64_t start, uint64_t end) noexcept {
  ByStart::iterator it;
  try {
    it = by_start_.emplace(start, end).first;
  } catch (...) {
    Drop(end - start);
    return false;
  }
  try {
    by_size_.emplace(end - start, start);
  } catch (...) {
    by_start_.erase(it);
    Drop(end - start);
    return false;
  }
  covered_bytes_ += end - start;
  return true;
}

ExtentSet::ByStart::iterator ExtentSet::Erase(ByStart::iterator it) noexcept {
  uint64_t length = it->second - it->first;
  by_size_.erase({length, it->first});
  covered_bytes_ -= length;
  return by_start_.erase(it);
}

void ExtentSet::Drop(uint64_t bytes) noexcept {
  dropped_extents_++;
  dropped_bytes_ += bytes;
}

// Smallest first: a small extent holds the fewest whole chunks, so it is
// worth the least to the sender (one below a chunk is worth nothing).
void ExtentSet::EvictOverBound() noexcept {
  while (by_start_.size() > max_extents_) {
    auto smallest = by_size_.begin();
    uint64_t length = smallest->first;
    by_start_.erase(smallest->second);
    by_size_.erase(smallest);
    covered_bytes_ -= length;
    Drop(length);
  }
}

}  // namespace handoff::trim
