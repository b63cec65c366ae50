// SPDX-License-Identifier: GPL-2.0-or-later
#include "decoder.h"

#include <algorithm>
#include <cstring>

#include "hex.h"
#include "prefix_list.h"
#include "segment_reader.h"
#include "stream_walker.h"

namespace handoff {
namespace {

constexpr uint64_t kMaxFrameSeq = 1ull << 40;
// What out-of-order bookkeeping costs, roughly, in heap bytes: a kept
// version (its bytes, map node, string, heap entry) and a waiting self
// reference (map node, vector slot, allocation overhead).
constexpr uint64_t kStashCost = kChunkSize + 192;
constexpr uint64_t kPendingCost = 128;
constexpr uint64_t kMaxHeldBytes = HANDOFF_DECODER_MAX_HELD_BYTES;

}  // namespace

namespace {

// Names the regions one side has and the other lacks or sizes otherwise
// (an extended base whose extra disks differ), for WRONG_BASE messages.
std::string RegionDifference(const Geometry& stream, const Geometry& base) {
  auto describe = [](const Geometry& a, const Geometry& b) {
    std::string out;
    for (const Region& r : a.regions()) {
      bool same = false;
      for (const Region& o : b.regions())
        same |= o.name == r.name && o.size == r.size && o.kind == r.kind;
      if (!same)
        out += (out.empty() ? "" : ", ") + r.name + " (" +
               std::to_string(r.size) + " bytes)";
    }
    return out;
  };
  const std::string only_stream = describe(stream, base);
  const std::string only_base = describe(base, stream);
  std::string out;
  if (!only_stream.empty())
    out += "; the stream has regions this base lacks: " + only_stream;
  if (!only_base.empty())
    out += "; this base has regions the stream lacks: " + only_base;
  return out;
}

}  // namespace

Decoder::Decoder(const Base* base, std::unique_ptr<ChunkSink> sink)
    : base_(base), sink_(std::move(sink)), digest_(XXH3_createState()) {
  XXH3_128bits_reset(digest_);
  version_.assign(base_->geometry().total_chunks(), 0);
  is_data_.assign(base_->geometry().total_chunks(), 0);
}

Decoder::~Decoder() { XXH3_freeState(digest_); }

Status Decoder::Fail(Status s) {
  if (!s.ok() && state_ != State::kFailed) {
    state_ = State::kFailed;
    failure_ = s;
  }
  return s;
}

Status Decoder::Feed(const uint8_t* data, size_t len) {
  if (state_ == State::kFailed) return failure_;
  if (len == 0) return Status::Ok();
  if (data == nullptr)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "null data");
  if (state_ == State::kDone)
    return Fail(Status(HANDOFF_E_TRAILING_DATA,
                       std::to_string(len) + " bytes after the end record"));
  buf_.append(reinterpret_cast<const char*>(data), len);
  Status s = Process();
  if (buf_pos_ > 0) {
    buf_.erase(0, buf_pos_);
    buf_pos_ = 0;
  }
  return Fail(s);
}

Status Decoder::Process() {
  for (;;) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(buf_.data()) + buf_pos_;
    size_t avail = buf_.size() - buf_pos_;
    if (state_ == State::kHeader) {
      StreamHeader header;
      size_t consumed = 0, needed = 0;
      Status s = ParseStreamHeader(p, avail, &header, &consumed, &needed);
      if (s.code() == HANDOFF_E_TRUNCATED) return Status::Ok();
      HANDOFF_RETURN_IF_ERROR(s);
      HANDOFF_RETURN_IF_ERROR(CheckHeader(header));
      if (header.version == kSegmentedStreamVersion) {
        bool waiting = false;
        HANDOFF_RETURN_IF_ERROR(ProcessSegmented(p, avail, &waiting));
        if (waiting) return Status::Ok();
        continue;
      }
      XXH3_128bits_update(digest_, p, consumed);
      consumed_ += consumed;
      buf_pos_ += consumed;
      state_ = State::kFrames;
      continue;
    }
    if (state_ == State::kSegments) {
      bool waiting = false;
      HANDOFF_RETURN_IF_ERROR(ProcessSegmented(p, avail, &waiting));
      if (waiting) return Status::Ok();
      continue;
    }
    if (state_ == State::kDone) {
      if (avail == 0) return Status::Ok();
      return Status(HANDOFF_E_TRAILING_DATA,
                    std::to_string(avail) + " bytes after the end record");
    }
    StreamPart part;
    Status s = FindStreamPart(p, avail, consumed_, frames_seen_.size(), &part);
    if (s.code() == HANDOFF_E_TRUNCATED) return Status::Ok();  // wait
    HANDOFF_RETURN_IF_ERROR(s);
    if (part.is_end) {
      HANDOFF_RETURN_IF_ERROR(CheckEnd(p));
      buf_pos_ += part.size;
      state_ = State::kDone;
      continue;
    }
    HANDOFF_RETURN_IF_ERROR(ProcessFrame(part.frame, p, part.size, !out_of_order_));
    XXH3_128bits_update(digest_, p, part.size);
    consumed_ += part.size;
    buf_pos_ += part.size;
  }
}

Status Decoder::CheckHeader(const StreamHeader& header) const {
  if (std::memcmp(header.base_id, base_->id(), 16) != 0)
    return Status(HANDOFF_E_WRONG_BASE,
                  "stream made against base " + Hex(header.base_id, 16) +
                      ", this base is " + Hex(base_->id(), 16) +
                      RegionDifference(header.geometry, base_->geometry()));
  if (!(header.geometry == base_->geometry()))
    return Status(HANDOFF_E_GEOMETRY_MISMATCH,
                  "stream regions differ from the base's");
  return Status::Ok();
}

Status Decoder::ApplyFrame(const uint8_t* frame, size_t len) {
  if (state_ == State::kFailed) return failure_;
  if (frame == nullptr) return Status(HANDOFF_E_INVALID_ARGUMENT, "null frame");
  if (state_ != State::kFrames)
    return Status(HANDOFF_E_STATE,
                  "frames apply after the header and before the end record");
  out_of_order_ = true;
  if (len < kFrameHeaderSize)
    return Fail(Status(HANDOFF_E_TRUNCATED, "frame shorter than its header"));
  FrameHeader h;
  HANDOFF_RETURN_IF_ERROR(Fail(ParseFrameHeader(frame, &h)));
  if (len != kFrameHeaderSize + h.payload_length)
    return Fail(Status(len < kFrameHeaderSize + h.payload_length
                           ? HANDOFF_E_TRUNCATED
                           : HANDOFF_E_TRAILING_DATA,
                       "frame of " + std::to_string(len) + " bytes declares " +
                           std::to_string(h.payload_length) + " of payload"));
  return Fail(ProcessFrame(h, frame, len, false));
}

Status Decoder::ProcessFrame(const FrameHeader& h, const uint8_t* p,
                             size_t len, bool in_order) {
  const std::string where = "frame " + std::to_string(h.frame_seq) + ": ";
  if (in_order) {
    if (h.frame_seq != next_frame_)
      return Status(HANDOFF_E_FRAME_SEQUENCE,
                    where + "expected frame " + std::to_string(next_frame_));
  } else if (h.frame_seq >= kMaxFrameSeq ||
             frames_seen_.count(h.frame_seq) != 0) {
    return Status(HANDOFF_E_FRAME_SEQUENCE,
                  where + "duplicate or impossible frame number");
  }
  if (h.codec > HANDOFF_CODEC_ZLIB)
    return Status(HANDOFF_E_UNKNOWN_CODEC,
                  where + "unknown codec " + std::to_string(h.codec));
  if (!CodecLevelValid(h.codec, h.level))
    return Status(HANDOFF_E_BAD_LEVEL, where + "level " +
                                           std::to_string(h.level) +
                                           " invalid for " + CodecName(h.codec));
  ByteReader payload(p + kFrameHeaderSize, len - kFrameHeaderSize);
  Status s = ReadPrefix(h, &payload);
  if (!s.ok()) return Status(s.code(), where + s.message());
  plain_.resize(h.plain_length);
  s = decompressor_.Decompress(
      h.codec, p + kFrameHeaderSize + payload.pos(), payload.remaining(),
      prefix_.data(), prefix_.size(), plain_.data(), h.plain_length);
  if (!s.ok()) return Status(s.code(), where + s.message());
  if (Checksum64(plain_.data(), plain_.size()) != h.plain_checksum)
    return Status(HANDOFF_E_CHECKSUM, where + "plaintext checksum mismatch");
  uint64_t last_seq = 0;
  s = ApplyRecords(h, in_order, &last_seq);
  if (!s.ok()) return Status(s.code(), where + s.message());
  if (in_order) next_frame_++;
  frames_seen_.insert(h.frame_seq);
  plain_bytes_ += h.plain_length;
  FrameDone(h.frame_seq, last_seq);
  return Status::Ok();
}

Status Decoder::ReadPrefix(const FrameHeader& h, ByteReader* payload) {
  prefix_.clear();
  if (!(h.flags & kFrameFlagPrefix)) return Status::Ok();
  if (h.codec != HANDOFF_CODEC_ZSTD)
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "prefix flag on a non-zstd frame");
  HANDOFF_RETURN_IF_ERROR(ReadPrefixList(
      payload, base_->geometry().total_chunks(), &prefix_chunks_));
  GatherPrefix(*base_, prefix_chunks_, &prefix_);
  return Status::Ok();
}

// The records must number h.record_count, with increasing sequence numbers.
Status Decoder::ApplyRecords(const FrameHeader& h, bool in_order,
                             uint64_t* last_seq) {
  RecordIterator records(plain_.data(), plain_.size());
  uint32_t count = 0;
  uint64_t prev = 0;
  Record rec;
  while (records.Next(&rec)) {
    if (++count > h.record_count)
      return Status(HANDOFF_E_BAD_RECORD,
                    "more records than the declared " +
                        std::to_string(h.record_count));
    if (rec.seq <= prev || (in_order && rec.seq <= last_seq_))
      return Status(HANDOFF_E_BAD_RECORD, "record sequence " +
                                              std::to_string(rec.seq) +
                                              " not increasing");
    prev = rec.seq;
    if (in_order) last_seq_ = rec.seq;
    HANDOFF_RETURN_IF_ERROR(ApplyRecord(rec, in_order));
  }
  HANDOFF_RETURN_IF_ERROR(records.status());
  if (count != h.record_count)
    return Status(HANDOFF_E_BAD_RECORD,
                  std::to_string(count) + " records, declared " +
                      std::to_string(h.record_count));
  *last_seq = prev;
  return Status::Ok();
}

void Decoder::FrameDone(uint64_t frame, uint64_t last_seq) {
  if (frame != complete_frames_) {
    later_frames_[frame] = last_seq;
    return;
  }
  complete_seq_ = std::max(complete_seq_, last_seq);
  complete_frames_++;
  for (auto it = later_frames_.begin();
       it != later_frames_.end() && it->first == complete_frames_;
       it = later_frames_.erase(it)) {
    complete_seq_ = std::max(complete_seq_, it->second);
    complete_frames_++;
  }
  DropUnreferenced();
}

// A record may only reference the version its source chunk holds at that
// point of the stream (an in-order decoder refuses anything else), so a
// version superseded by version v can only be referenced by records
// numbered below v. Once all of those have arrived it can go.
void Decoder::DropUnreferenced() {
  while (!expiry_.empty() && expiry_.top().first - 1 <= complete_seq_) {
    const Version v = expiry_.top().second;
    expiry_.pop();
    // Superseded again since: wait for the newer version's predecessors.
    const uint64_t bound = version_[v.first];
    if (bound - 1 > complete_seq_) {
      expiry_.push({bound, v});
      continue;
    }
    if (stash_.erase(v) != 0) held_ -= kStashCost;
  }
}

Status Decoder::Hold(uint64_t bytes) {
  if (held_ + bytes > kMaxHeldBytes) {
    uint64_t waiting = 0;
    for (const auto& [version, list] : pending_) waiting += list.size();
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "frames applied out of order would need more than " +
                      std::to_string(kMaxHeldBytes >> 20) +
                      " MiB for superseded versions and waiting self "
                      "references (" +
                      std::to_string(stash_.size()) + " versions, " +
                      std::to_string(waiting) +
                      " references held): deliver frames closer to stream "
                      "order");
  }
  held_ += bytes;
  return Status::Ok();
}

Status Decoder::Stash(uint64_t global, uint64_t seq, const uint8_t* data) {
  // version_[global] superseded it: see DropUnreferenced.
  if (version_[global] - 1 <= complete_seq_ || stash_.count({global, seq}) != 0)
    return Status::Ok();
  HANDOFF_RETURN_IF_ERROR(Hold(kStashCost));
  stash_[{global, seq}].assign(reinterpret_cast<const char*>(data), kChunkSize);
  expiry_.push({version_[global], {global, seq}});
  return Status::Ok();
}

Status ChunkSink::WriteZeros(uint32_t region, uint64_t index, uint64_t count) {
  static const uint8_t zeros[kChunkSize] = {};
  for (uint64_t i = 0; i < count; i++)
    HANDOFF_RETURN_IF_ERROR(Write(region, index + i, zeros));
  return Status::Ok();
}

Status Decoder::ApplyRecord(const Record& rec, bool in_order) {
  if (segments_) return ApplySegmentedRecord(rec);
  if (rec.flags & kRecordFlagPinned)
    return Status(HANDOFF_E_BAD_RECORD,
                  "PINNED data record outside a segmented stream");
  const Geometry& g = base_->geometry();
  per_kind_[rec.kind]++;
  records_++;
  if (rec.iteration > iteration_) iteration_ = rec.iteration;
  if (rec.kind == RecordKind::kIteration) return Status::Ok();
  if (!g.Contains(rec.region, rec.index))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunk " + std::to_string(rec.index) + " of region " +
                      std::to_string(rec.region) + " outside the geometry");
  const uint64_t global = g.Global(rec.region, rec.index);
  switch (rec.kind) {
    case RecordKind::kZero: {
      static const uint8_t zeros[kChunkSize] = {};
      if (rec.count > 1) return PutZeroRun(rec);
      return Put(global, rec.seq, zeros, false);
    }
    case RecordKind::kData: {
      if (!(rec.flags & kRecordFlagXor))
        return Put(global, rec.seq, rec.data, true);
      uint8_t x[kChunkSize];
      XorChunk(rec.data, base_->Chunk(rec.region, rec.index), x);
      return Put(global, rec.seq, x, true);
    }
    case RecordKind::kBaseRef:
      if (!g.Contains(rec.src_region, rec.src_index))
        return Status(HANDOFF_E_BAD_BASE_REF,
                      "base reference to chunk " + std::to_string(rec.src_index) +
                          " of region " + std::to_string(rec.src_region) +
                          ", which the base does not have");
      return Put(global, rec.seq, base_->Chunk(rec.src_region, rec.src_index),
                 false);
    case RecordKind::kSelfRef: {
      if (!g.Contains(rec.src_region, rec.src_index) || rec.src_seq == 0 ||
          rec.src_seq >= rec.seq)
        return Status(HANDOFF_E_BAD_SELF_REF,
                      "self reference to chunk " + std::to_string(rec.src_index) +
                          " of region " + std::to_string(rec.src_region) +
                          " version " + std::to_string(rec.src_seq) +
                          ", which cannot precede record " +
                          std::to_string(rec.seq));
      const uint64_t src = g.Global(rec.src_region, rec.src_index);
      if (version_[src] == rec.src_seq) {
        if (!is_data_[src])
          return Status(HANDOFF_E_BAD_SELF_REF,
                        "self reference to version " +
                            std::to_string(rec.src_seq) +
                            ", which is not a data record");
        uint8_t buf[kChunkSize];
        HANDOFF_RETURN_IF_ERROR(sink_->Read(rec.src_region, rec.src_index, buf));
        return Put(global, rec.seq, buf, false);
      }
      auto it = stash_.find({src, rec.src_seq});
      if (it != stash_.end())
        return Put(global, rec.seq,
                   reinterpret_cast<const uint8_t*>(it->second.data()), false);
      if (in_order && !out_of_order_)
        return Status(HANDOFF_E_BAD_SELF_REF,
                      "self reference to chunk " + std::to_string(rec.src_index) +
                          " of region " + std::to_string(rec.src_region) +
                          " version " + std::to_string(rec.src_seq) +
                          ", which was never sent or is superseded");
      HANDOFF_RETURN_IF_ERROR(Hold(kPendingCost));
      pending_[{src, rec.src_seq}].push_back({global, rec.seq});
      return Status::Ok();
    }
    case RecordKind::kIteration:
      break;
  }
  return Status::Ok();
}

Status Decoder::Put(uint64_t global, uint64_t seq, const uint8_t* data,
                    bool is_data) {
  uint32_t region;
  uint64_t index;
  base_->geometry().Locate(global, &region, &index);
  if (seq <= version_[global]) {
    stale_++;
    // A later frame may still reference this version.
    if (is_data && out_of_order_) HANDOFF_RETURN_IF_ERROR(Stash(global, seq, data));
  } else {
    const bool keep_old = out_of_order_ && is_data_[global];
    const uint64_t old_seq = version_[global];
    uint8_t old[kChunkSize];
    if (keep_old) HANDOFF_RETURN_IF_ERROR(sink_->Read(region, index, old));
    HANDOFF_RETURN_IF_ERROR(sink_->Write(region, index, data));
    version_[global] = seq;
    is_data_[global] = is_data;
    if (keep_old) HANDOFF_RETURN_IF_ERROR(Stash(global, old_seq, old));
  }
  if (is_data) {
    auto it = pending_.find({global, seq});
    if (it != pending_.end()) {
      std::vector<Pending> waiting = std::move(it->second);
      pending_.erase(it);
      held_ -= waiting.size() * kPendingCost;
      std::string copy(reinterpret_cast<const char*>(data), kChunkSize);
      for (const Pending& w : waiting)
        HANDOFF_RETURN_IF_ERROR(
            Put(w.global, w.seq, reinterpret_cast<const uint8_t*>(copy.data()),
                false));
    }
  }
  return Status::Ok();
}

Status Decoder::PutZeroRun(const Record& rec) {
  const Geometry& g = base_->geometry();
  if (rec.count - 1 > g.regions()[rec.region].chunks() - 1 - rec.index)
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "zero run of " + std::to_string(rec.count) +
                      " chunks from " + std::to_string(rec.index) +
                      " of region " + std::to_string(rec.region) +
                      " runs past the region");
  zero_runs_++;
  const uint64_t first = g.Global(rec.region, rec.index);
  uint64_t run = 0;  // chunks before i still to be zeroed in the sink
  bool stale = false;
  auto write_run = [&](uint64_t end) -> Status {
    if (run == 0) return Status::Ok();
    Status s = sink_->WriteZeros(rec.region, rec.index + (end - run), run);
    run = 0;
    return s;
  };
  for (uint64_t i = 0; i < rec.count; i++) {
    const uint64_t global = first + i;
    if (rec.seq <= version_[global]) {
      stale = true;  // a record lost, in part, to newer versions
      HANDOFF_RETURN_IF_ERROR(write_run(i));
      continue;
    }
    const bool keep_old = out_of_order_ && is_data_[global];
    const uint64_t old_seq = version_[global];
    version_[global] = rec.seq;
    is_data_[global] = 0;
    if (keep_old) {
      // A later frame may reference the DATA version being superseded
      // (Stash judges by the new version, as Put does).
      uint8_t old[kChunkSize];
      HANDOFF_RETURN_IF_ERROR(sink_->Read(rec.region, rec.index + i, old));
      HANDOFF_RETURN_IF_ERROR(Stash(global, old_seq, old));
    }
    run++;
  }
  if (stale) stale_++;
  return write_run(rec.count);
}

Status Decoder::CheckEnd(const uint8_t* p) {
  EndRecord end;
  HANDOFF_RETURN_IF_ERROR(ParseEndRecord(p, &end));
  auto mismatch = [](const std::string& what, uint64_t got, uint64_t want) {
    return Status(HANDOFF_E_END_MISMATCH,
                  "end record says " + std::to_string(want) + " " + what +
                      ", stream had " + std::to_string(got));
  };
  uint64_t frames = frames_seen_.size();
  if (end.frame_count != frames) return mismatch("frames", frames, end.frame_count);
  if (!frames_seen_.empty() && *frames_seen_.rbegin() != frames - 1)
    return Status(HANDOFF_E_FRAME_SEQUENCE, "frame numbers have gaps");
  if (end.record_count != records_)
    return mismatch("records", records_, end.record_count);
  for (RecordKind k : kAllRecordKinds)
    if (end.per_kind[k] != per_kind_[k])
      return mismatch(RecordKindPlural(k), per_kind_[k], end.per_kind[k]);
  if (end.plain_bytes != plain_bytes_)
    return mismatch("plaintext bytes", plain_bytes_, end.plain_bytes);
  if (!out_of_order_) {
    if (end.stream_bytes != consumed_)
      return mismatch("stream bytes", consumed_, end.stream_bytes);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(digest_));
    if (std::memcmp(c.digest, end.digest, 16) != 0)
      return Status(HANDOFF_E_DIGEST, "whole-stream digest mismatch");
  }
  return Status::Ok();
}

Status Decoder::Finish() {
  if (state_ == State::kFailed) return failure_;
  if (segments_) return Fail(FinishSegmented());
  if (state_ == State::kHeader)
    return Fail(Status(HANDOFF_E_TRUNCATED,
                       "stream ended inside its header (" +
                           std::to_string(buf_.size()) + " bytes)"));
  if (state_ != State::kDone)
    return Fail(Status(HANDOFF_E_TRUNCATED,
                       "stream ended before its end record, " +
                           std::to_string(buf_.size() - buf_pos_) +
                           " bytes of an incomplete frame"));
  if (!pending_.empty())
    return Fail(Status(HANDOFF_E_BAD_SELF_REF,
                       std::to_string(pending_.size()) +
                           " self references to versions never sent, first "
                           "to global chunk " +
                           std::to_string(pending_.begin()->first.first)));
  return Status::Ok();
}

void Decoder::Stats(HandoffDecoderStats* s) const {
  std::memset(s, 0, sizeof(*s));
  for (RecordKind k : kAllRecordKinds)
    if (ApiStatsSlot(k) >= 0) s->records[ApiStatsSlot(k)] = per_kind_[k];
  s->records[HANDOFF_REC_ZERO] -= zero_runs_;
  s->records[HANDOFF_REC_ZERO_RUN] = zero_runs_;
  s->stale_records = stale_;
  s->frames = frames_seen_.size();
  s->stream_bytes = consumed_;
  s->plain_bytes = plain_bytes_;
  s->iteration = iteration_;
  s->held_bytes = held_;
}

}  // namespace handoff
