// SPDX-License-Identifier: GPL-2.0-or-later
#include "dedup.h"

#include <algorithm>
#include <cstring>

namespace handoff {
namespace {

ChunkChoice Same() {
  ChunkChoice c;
  c.same = true;
  return c;
}

ChunkChoice Reference(RecordKind kind, const Geometry& g, uint64_t src) {
  ChunkChoice c;
  c.kind = kind;
  g.Locate(src, &c.src_region, &c.src_index);
  return c;
}

}  // namespace

ChunkClassifier::ChunkClassifier(const Base* base, bool dedup)
    : base_(base), dedup_(dedup) {
  const uint64_t total = base->geometry().total_chunks();
  last_seq_.assign(total, 0);
  differs_.assign(total, 0);
  // Rehashing a large table stalls the producer; start with room for a
  // quarter of the geometry.
  self_.reserve(static_cast<size_t>(std::min<uint64_t>(total / 4, 1u << 22)));
}

ChunkChoice ChunkClassifier::Classify(uint32_t region, uint64_t index,
                                      const uint8_t* data) const {
  const uint64_t global = base_->geometry().Global(region, index);
  // SAME: the destination holds the base chunk here, unchanged since.
  const bool base_equal =
      std::memcmp(data, base_->Chunk(region, index), kChunkSize) == 0;
  if (base_equal && !differs_[global]) return Same();
  ChunkChoice c;
  if (!dedup_) {
    c.kind = RecordKind::kData;
  } else if (IsZeroChunk(data)) {
    c.kind = RecordKind::kZero;
    c.differs = !base_equal;
  } else if (base_equal) {
    // Changed and changed back: restore it from the base.
    c.kind = RecordKind::kBaseRef;
    c.src_region = region;
    c.src_index = index;
    c.differs = false;
  } else {
    c = Deduplicate(global, data);
  }
  c.global = global;
  return c;
}

// BASE_REF, SELF_REF or DATA for a non-zero chunk that differs from its
// base chunk; SAME when it is resubmitted unchanged since it was sent.
ChunkChoice ChunkClassifier::Deduplicate(uint64_t global,
                                         const uint8_t* data) const {
  ChunkChoice c;
  const Geometry& g = base_->geometry();
  const Hash128 h = HashChunk(data);
  uint64_t base_global;
  if (base_->Find(h, data, &base_global))
    return Reference(RecordKind::kBaseRef, g, base_global);
  auto it = self_.find(h);
  // Only a version still current: an in-order decoder keeps no other.
  if (it != self_.end() && last_seq_[it->second.global] == it->second.seq) {
    if (it->second.global == global) return Same();
    c = Reference(RecordKind::kSelfRef, g, it->second.global);
    c.src_seq = it->second.seq;
    return c;
  }
  c.kind = RecordKind::kData;
  c.self_source = true;
  c.hash = h;
  return c;
}

void ChunkClassifier::Commit(const ChunkChoice& c, uint64_t seq) {
  last_seq_[c.global] = seq;
  differs_[c.global] = c.differs;
  if (c.self_source) self_[c.hash] = SelfEntry{c.global, seq};
}

void ChunkClassifier::CommitZeroRun(uint32_t region, uint64_t first,
                                    uint64_t count, uint64_t seq) {
  const uint64_t global = base_->geometry().Global(region, first);
  // Self entries of these chunks go stale by their sequence number. Not
  // comparing with the base (which may be zero too) costs at most a
  // BASE_REF instead of a SAME later.
  std::fill_n(last_seq_.begin() + global, count, seq);
  std::fill_n(differs_.begin() + global, count, 1);
}

}  // namespace handoff
