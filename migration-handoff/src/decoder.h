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

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base.h"
#include "codec.h"
#include "format.h"
#include "record.h"

namespace handoff {

// Where decoded chunks go: caller memory or caller callbacks.
class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual Status Write(uint32_t region, uint64_t index, const uint8_t* data) = 0;
  virtual Status Read(uint32_t region, uint64_t index, uint8_t* data) = 0;
};

class Decoder {
 public:
  Decoder(const Base* base, std::unique_ptr<ChunkSink> sink);
  ~Decoder();

  Status Feed(const uint8_t* data, size_t len);
  Status ApplyFrame(const uint8_t* frame, size_t len);
  Status Finish();
  void Stats(HandoffDecoderStats* stats) const;

 private:
  enum class State { kHeader, kFrames, kDone, kFailed };
  using Version = std::pair<uint64_t, uint64_t>;  // (global chunk, seq)
  struct Pending {
    uint64_t global;
    uint64_t seq;
  };

  Status Fail(Status s);
  Status Process();
  Status ProcessFrame(const uint8_t* p, size_t len, bool in_order);
  Status ApplyRecord(const Record& rec, bool in_order);
  // Puts @data as version @seq of @global if newer than what is there.
  Status Put(uint64_t global, uint64_t seq, const uint8_t* data, bool is_data);
  Status CheckEnd(const uint8_t* p);

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
  std::vector<uint8_t> prefix_;
  std::vector<uint64_t> version_;  // per global chunk; 0 = base content
  std::vector<uint8_t> is_data_;   // current version came from DATA
  std::set<uint64_t> frames_seen_;
  uint64_t next_frame_ = 0;
  uint64_t last_seq_ = 0;          // in-order streams: strictly increasing
  std::map<Version, std::vector<Pending>> pending_;
  std::map<Version, std::string> stash_;  // superseded DATA, out of order

  std::array<uint64_t, kRecordTypeCount> per_type_ = {};
  uint64_t records_ = 0;
  uint64_t plain_bytes_ = 0;
  uint64_t stale_ = 0;
  uint32_t iteration_ = 0;
};

}  // namespace handoff

#endif  // HANDOFF_DECODER_H
