// SPDX-License-Identifier: GPL-2.0-or-later
//
// Dedup: what a submitted chunk becomes, cheapest first. ZERO; SAME (the
// destination already holds these bytes: nothing on the wire); BASE_REF
// (equal to a base chunk, found by hash and confirmed by comparing
// bytes); SELF_REF (equal to a DATA chunk sent earlier that is still the
// current version of its chunk); DATA otherwise. Without dedup only SAME
// and DATA are chosen.
#ifndef HANDOFF_DEDUP_H
#define HANDOFF_DEDUP_H

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "base.h"
#include "chunk.h"
#include "record_kind.h"

namespace handoff {

struct ChunkChoice {
  bool same = false;  // nothing to send
  // Otherwise the record: kZero, kBaseRef, kSelfRef or kData, and the
  // source a reference names.
  RecordKind kind = RecordKind::kData;
  uint32_t src_region = 0;
  uint64_t src_index = 0;
  uint64_t src_seq = 0;  // kSelfRef
  // What Commit records about the chunk.
  uint64_t global = 0;
  bool differs = true;         // destination differs from the base after it
  bool self_source = false;    // kData that later chunks may reference
  Hash128 hash;                // its hash, when self_source
};

// Classifies the chunks of one encoder, remembering what it sent.
class ChunkClassifier {
 public:
  ChunkClassifier(const Base* base, bool dedup);

  // What chunk @index of @region becomes, holding @data: a snapshot that
  // does not change under us, so that a self reference never points at
  // content other than its hash says. Changes nothing.
  ChunkChoice Classify(uint32_t region, uint64_t index,
                       const uint8_t* data) const;
  // @choice (not SAME) was sent as the record numbered @seq.
  void Commit(const ChunkChoice& choice, uint64_t seq);
  // Chunks [@first, @first + @count) of @region were sent as a zero run
  // numbered @seq: no DATA of theirs may be referenced any more, and a
  // chunk equal to its base later is sent again (as BASE_REF).
  void CommitZeroRun(uint32_t region, uint64_t first, uint64_t count,
                     uint64_t seq);

 private:
  struct SelfEntry {
    uint64_t global;
    uint64_t seq;
  };
  struct HashOfHash {
    size_t operator()(const Hash128& h) const { return h.lo; }
  };

  ChunkChoice Deduplicate(uint64_t global, const uint8_t* data) const;

  const Base* base_;
  bool dedup_;
  std::vector<uint64_t> last_seq_;  // per global chunk: version sent
  std::vector<uint8_t> differs_;    // destination may differ from base
  std::unordered_map<Hash128, SelfEntry, HashOfHash> self_;
};

}  // namespace handoff

#endif  // HANDOFF_DEDUP_H
