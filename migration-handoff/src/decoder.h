// SPDX-License-Identifier: GPL-2.0-or-later
//
// Decoder: reads a stream, trusting nothing in it, and applies its records
// to a destination that starts as a copy of the base. Each record carries
// a sequence number and a chunk only ever moves to a newer version, so
// frames may be applied in any order (ApplyFrame). Self references wait
// for their source when it has not arrived yet.
#ifndef HANDOFF_DECODER_H
#define HANDOFF_DECODER_H

#include <xxhash.h>

#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base.h"
#include "byte_io.h"
#include "codec.h"
#include "format.h"
#include "record.h"

namespace handoff {

struct SegmentState;

// Where decoded chunks go: caller memory or caller callbacks.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual Status Write(uint32_t region, uint64_t index, const uint8_t* data) = 0;
  virtual Status Read(uint32_t region, uint64_t index, uint8_t* data) = 0;
  // Chunks [index, index + count) of @region read as zeros afterwards.
  virtual Status WriteZeros(uint32_t region, uint64_t index, uint64_t count);
};

class Decoder {
 public:
  Decoder(const Base* base, std::unique_ptr<ChunkSink> sink);
  ~Decoder();

  Status Feed(const uint8_t* data, size_t len);
  Status ApplyFrame(const uint8_t* frame, size_t len);
  Status Finish();
  void Stats(HandoffDecoderStats* stats) const;

  // Segmented streams (stream version 3, segment_reader.cc). @root, when
  // not null, is the SHA-256 the table part must have.
  Status LoadTable(const uint8_t* table, size_t len, const uint8_t* root);
  Status ApplySegment(uint32_t number, const uint8_t* bytes, size_t len);

 private:
  // kSegments: a segment table is loaded, segments apply.
  enum class State { kHeader, kFrames, kSegments, kDone, kFailed };
  using Version = std::pair<uint64_t, uint64_t>;  // (global chunk, seq)
  struct Pending {
    uint64_t global;
    uint64_t seq;
  };

  Status Fail(Status s);
  Status Process();
  // Frame @p of @len bytes, whose header @h was checked.
  Status ProcessFrame(const FrameHeader& h, const uint8_t* p, size_t len,
                      bool in_order);
  // Reads the prefix list of @payload, if any, into prefix_.
  Status ReadPrefix(const FrameHeader& h, ByteReader* payload);
  // Applies the records of the plaintext in plain_; *@last_seq is the
  // last one's sequence number.
  Status ApplyRecords(const FrameHeader& h, bool in_order, uint64_t* last_seq);
  Status ApplyRecord(const Record& rec, bool in_order);
  // Puts @data as version @seq of @global if newer than what is there.
  Status Put(uint64_t global, uint64_t seq, const uint8_t* data, bool is_data);
  // A zero run: Put of zeros for every chunk it is newer for, written to
  // the sink as runs.
  Status PutZeroRun(const Record& rec);
  Status CheckEnd(const uint8_t* p);
  // The stream header names this decoder's base and geometry.
  Status CheckHeader(const StreamHeader& header) const;

  // Segmented streams (segment_reader.cc).
  Status LoadCheckedTable(const uint8_t* table, size_t len,
                          const uint8_t* root);
  // The checks of handoff_decoder_apply_segment before anything is written.
  Status CheckSegment(uint32_t number, const uint8_t* bytes, size_t len) const;
  Status DecodeSegment(uint32_t number, const uint8_t* bytes, size_t len);
  // Applies the @count frames of @bytes, which they must fill exactly.
  Status ApplyFramesOf(const uint8_t* bytes, size_t len, uint32_t count);
  Status ApplySegmentedRecord(const Record& rec);
  Status CheckSegmentedRecord(const Record& rec) const;
  Status ResolveSelfRef(const Record& rec, const uint8_t** data) const;
  void SegmentDone(uint32_t number);
  Status FinishSegmented();
  void ReleasePins(uint32_t number);
  // Feed of a segmented stream: the table part, then segments in order.
  Status ProcessSegmented(const uint8_t* p, size_t avail, bool* waiting);
  // Out of order: keeps superseded DATA version @seq of @global while a
  // frame still to come may reference it.
  Status Stash(uint64_t global, uint64_t seq, const uint8_t* data);
  // Counts @bytes more held for out-of-order application, within the limit.
  Status Hold(uint64_t bytes);
  // Frame @frame, whose last record is @last_seq (0: none), was applied.
  void FrameDone(uint64_t frame, uint64_t last_seq);
  // Drops kept versions no frame still to come can reference.
  void DropUnreferenced();

  const Base* base_;
  std::unique_ptr<ChunkSink> sink_;
  State state_ = State::kHeader;
  Status failure_;
  std::string buf_;
  size_t buf_pos_ = 0;
  XXH3_state_t* digest_;
  uint64_t consumed_ = 0;  // stream bytes before the current position
  bool out_of_order_ = false;

  Decompressor decompressor_;
  std::vector<uint8_t> plain_;
  std::vector<uint64_t> prefix_chunks_;
  std::vector<uint8_t> prefix_;
  std::vector<uint64_t> version_;  // per global chunk; 0 = base content
  std::vector<uint8_t> is_data_;   // current version came from DATA
  uint64_t zero_runs_ = 0;         // ZERO records that were runs
  std::set<uint64_t> frames_seen_;
  uint64_t next_frame_ = 0;
  uint64_t last_seq_ = 0;          // in-order streams: strictly increasing
  std::map<Version, std::vector<Pending>> pending_;
  std::map<Version, std::string> stash_;  // superseded DATA, out of order
  // Stashed versions by the version of their chunk when checked: records
  // below it are the only ones that may reference them (min-heap).
  using Expiry = std::pair<uint64_t, Version>;
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<Expiry>> expiry_;
  uint64_t held_ = 0;  // estimated bytes in pending_, stash_ and expiry_
  // Frames 0..complete_frames_-1 have all been applied, so every record
  // numbered up to complete_seq_ has (frames carry ascending numbers).
  uint64_t complete_frames_ = 0;
  uint64_t complete_seq_ = 0;
  std::map<uint64_t, uint64_t> later_frames_;  // applied beyond: last seq

  RecordCounts per_kind_;
  uint64_t records_ = 0;
  uint64_t plain_bytes_ = 0;
  uint64_t stale_ = 0;
  uint32_t iteration_ = 0;

  std::unique_ptr<SegmentState> segments_;  // segmented streams only
};

}  // namespace handoff

#endif  // HANDOFF_DECODER_H
