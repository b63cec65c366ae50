// SPDX-License-Identifier: GPL-2.0-or-later
//
// SegmentWriter: the encoder of segmented streams (stream version 3). It
// takes a VM's state as one version (each chunk at most once), holds the
// chunks that differ from the base, and at Finish lays the stream out:
// remote records in the caller's order (then by address, memory first),
// classified in that order so that a self reference only names data
// already laid out, each reference the order does not list then moved
// behind its source; local records in the table part; segments cut by the
// packer; the table with each segment's SHA-256; the root.
#ifndef HANDOFF_SEGMENT_WRITER_H
#define HANDOFF_SEGMENT_WRITER_H

#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base.h"
#include "handoff.h"
#include "segment_packer.h"
#include "segment_table.h"

namespace handoff {

class SegmentWriter {
 public:
  // @config.order is read here, not kept.
  static Status Create(const Base* base, const HandoffEncoderConfig& config,
                       std::unique_ptr<SegmentWriter>* out);

  Status Submit(uint32_t region, uint64_t index, const uint8_t* data);
  Status SubmitMany(uint32_t region, const uint8_t* region_data,
                    const uint64_t* indexes, size_t count);
  Status SubmitZeroRun(uint32_t region, uint64_t first, uint64_t count);
  Status Finish();
  Status Pull(uint8_t* buf, size_t cap, size_t* produced);
  bool Done() const { return finished_.load() && pulled_ == stream_.size(); }
  Status Root(uint8_t out[kSha256Size]) const;
  void Stats(HandoffEncoderStats* stats) const;

 private:
  Status Lay();
  // What the writer knows of a global chunk.
  // kBaseRef: held, then found equal to a base chunk at Finish.
  enum ChunkState : uint8_t { kUnseen = 0, kHeld, kZero, kSame, kBaseRef };
  struct LocalRecord {
    uint64_t global;
    uint64_t count;  // zeros: chunks from global, within one region
    RecordKind kind;
    uint8_t src_region;
    uint64_t src_index;
  };

  SegmentWriter(const Base* base, const HandoffEncoderConfig& config)
      : base_(base), config_(config) {}
  Status Claim(uint32_t region, uint64_t first, uint64_t count);
  std::vector<uint64_t> RemoteOrder() const;
  // Classifies the held chunks in @order into remote and local records.
  void Classify(const std::vector<uint64_t>& order,
                std::vector<RemoteRecord>* remote,
                std::vector<LocalRecord>* local);
  void GroupReferrers(std::vector<RemoteRecord>* remote) const;
  void PinSources(std::vector<RemoteRecord>* remote) const;
  Status CheckPinnedBound(const std::vector<RemoteRecord>& remote,
                          const PackedSegments& packed) const;
  // The local-record frames, numbered from 0, sequence numbers from @seq.
  Status BuildLocalFrames(std::vector<LocalRecord> local, uint64_t seq,
                          SegmentTable* table);
  Status BuildTable(const PackedSegments& packed, SegmentTable* table);
  // The chunk index: every chunk with a record, where it is.
  void BuildIndex(const std::vector<RemoteRecord>& remote,
                  const PackedSegments& packed, SegmentTable* table) const;

  const Base* base_;
  HandoffEncoderConfig config_;
  std::vector<uint64_t> order_;  // global chunks, as the caller listed
  std::vector<uint8_t> state_;   // ChunkState per global chunk
  std::unordered_map<uint64_t, size_t> held_at_;  // global -> in held_
  std::string held_;
  std::vector<LocalRecord> zero_runs_;
  // Pull, Done and Stats may run on another thread than the producer:
  // stream_ is complete and never changes once finished_ is set.
  std::atomic<bool> finished_{false};
  // Finish runs once: a failed one has already classified the held
  // chunks (turned some into base references), so a retry would write a
  // stream its own index contradicts.
  bool finish_attempted_ = false;
  // A failed finish, for Pull on another thread: failure_ is written
  // before failed_ is set and never after.
  std::atomic<bool> failed_{false};
  Status failure_;
  std::string stream_;
  std::atomic<size_t> pulled_{0};
  Sha256Digest root_ = {};
  std::atomic<uint64_t> chunks_[HANDOFF_REC_KINDS] = {};  // API slots
  uint64_t frames_ = 0;
  uint64_t plain_bytes_ = 0;
  uint64_t xor_chunks_ = 0;   // of the frames kept (trials not counted)
};

}  // namespace handoff

#endif  // HANDOFF_SEGMENT_WRITER_H
