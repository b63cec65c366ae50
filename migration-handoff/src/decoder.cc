// SPDX-License-Identifier: GPL-2.0-or-later
#include "decoder.h"

#include <cstring>

#include "byte_io.h"

namespace handoff {
namespace {

constexpr uint64_t kMaxFrameSeq = 1ull << 40;

std::string Hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
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
      if (std::memcmp(header.base_id, base_->id(), 16) != 0)
        return Status(HANDOFF_E_WRONG_BASE,
                      "stream made against base " + Hex(header.base_id, 16) +
                          ", this base is " + Hex(base_->id(), 16));
      if (!(header.geometry == base_->geometry()))
        return Status(HANDOFF_E_GEOMETRY_MISMATCH,
                      "stream regions differ from the base's");
      XXH3_128bits_update(digest_, p, consumed);
      consumed_ += consumed;
      buf_pos_ += consumed;
      state_ = State::kFrames;
      continue;
    }
    if (state_ == State::kDone) {
      if (avail == 0) return Status::Ok();
      return Status(HANDOFF_E_TRAILING_DATA,
                    std::to_string(avail) + " bytes after the end record");
    }
    if (avail < 4) return Status::Ok();
    uint32_t tag = LoadLe<uint32_t>(p);
    if (tag == kEndTag) {
      if (avail < kEndRecordSize) return Status::Ok();
      HANDOFF_RETURN_IF_ERROR(CheckEnd(p));
      buf_pos_ += kEndRecordSize;
      state_ = State::kDone;
      continue;
    }
    if (tag != kFrameTag) {
      FrameHeader unused;
      if (avail < kFrameHeaderSize) {
        char b[16];
        snprintf(b, sizeof(b), "%08x", tag);
        return Status(HANDOFF_E_BAD_FRAME_TAG,
                      std::string("expected a frame or end record, found tag 0x") + b);
      }
      return ParseFrameHeader(p, &unused);
    }
    if (avail < kFrameHeaderSize) return Status::Ok();
    FrameHeader h;
    HANDOFF_RETURN_IF_ERROR(ParseFrameHeader(p, &h));
    size_t frame_len = kFrameHeaderSize + h.payload_length;
    if (avail < frame_len) return Status::Ok();
    HANDOFF_RETURN_IF_ERROR(ProcessFrame(p, frame_len, !out_of_order_));
    XXH3_128bits_update(digest_, p, frame_len);
    consumed_ += frame_len;
    buf_pos_ += frame_len;
  }
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
  return Fail(ProcessFrame(frame, len, false));
}

Status Decoder::ProcessFrame(const uint8_t* p, size_t len, bool in_order) {
  FrameHeader h;
  HANDOFF_RETURN_IF_ERROR(ParseFrameHeader(p, &h));
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
  prefix_.clear();
  if (h.flags & kFrameFlagPrefix) {
    if (h.codec != HANDOFF_CODEC_ZSTD)
      return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                    where + "prefix flag on a non-zstd frame");
    uint32_t count = payload.Get<uint32_t>();
    uint32_t reserved = payload.Get<uint32_t>();
    if (payload.overrun() || reserved != 0)
      return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                    where + "bad prefix list header");
    if (count == 0 || count > kMaxPrefixChunks ||
        payload.remaining() / 8 < count)
      return Status(HANDOFF_E_LENGTH_LIMIT,
                    where + "prefix of " + std::to_string(count) +
                        " chunks beyond limits");
    prefix_.resize(size_t{count} * kChunkSize);
    const uint64_t total = base_->geometry().total_chunks();
    for (uint32_t i = 0; i < count; i++) {
      uint64_t g = payload.Get<uint64_t>();
      if (g >= total)
        return Status(HANDOFF_E_BAD_BASE_REF,
                      where + "prefix names base chunk " + std::to_string(g) +
                          " of " + std::to_string(total));
      std::memcpy(prefix_.data() + size_t{i} * kChunkSize, base_->ChunkGlobal(g),
                  kChunkSize);
    }
  }
  plain_.resize(h.plain_length);
  Status ds = decompressor_.Decompress(
      h.codec, p + kFrameHeaderSize + payload.pos(), payload.remaining(),
      prefix_.data(), prefix_.size(), plain_.data(), h.plain_length);
  if (!ds.ok()) return Status(ds.code(), where + ds.message());
  if (Checksum64(plain_.data(), plain_.size()) != h.plain_checksum)
    return Status(HANDOFF_E_CHECKSUM, where + "plaintext checksum mismatch");

  ByteReader r(plain_.data(), plain_.size());
  uint32_t count = 0;
  uint64_t prev = 0;
  while (r.remaining() > 0) {
    Record rec;
    Status s = ParseRecord(&r, &rec);
    if (!s.ok()) return Status(s.code(), where + s.message());
    if (++count > h.record_count)
      return Status(HANDOFF_E_BAD_RECORD,
                    where + "more records than the declared " +
                        std::to_string(h.record_count));
    if (rec.seq <= prev || (in_order && rec.seq <= last_seq_))
      return Status(HANDOFF_E_BAD_RECORD,
                    where + "record sequence " + std::to_string(rec.seq) +
                        " not increasing");
    prev = rec.seq;
    if (in_order) last_seq_ = rec.seq;
    s = ApplyRecord(rec, in_order);
    if (!s.ok()) return Status(s.code(), where + s.message());
  }
  if (count != h.record_count)
    return Status(HANDOFF_E_BAD_RECORD,
                  where + std::to_string(count) + " records, declared " +
                      std::to_string(h.record_count));
  if (in_order) next_frame_++;
  frames_seen_.insert(h.frame_seq);
  plain_bytes_ += h.plain_length;
  return Status::Ok();
}

Status Decoder::ApplyRecord(const Record& rec, bool in_order) {
  const Geometry& g = base_->geometry();
  per_type_[static_cast<size_t>(rec.type) - 1]++;
  records_++;
  if (rec.iteration > iteration_) iteration_ = rec.iteration;
  if (rec.type == RecordType::kIteration) return Status::Ok();
  if (!g.Contains(rec.region, rec.index))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunk " + std::to_string(rec.index) + " of region " +
                      std::to_string(rec.region) + " outside the geometry");
  const uint64_t global = g.Global(rec.region, rec.index);
  switch (rec.type) {
    case RecordType::kZero: {
      static const uint8_t zeros[kChunkSize] = {};
      return Put(global, rec.seq, zeros, false);
    }
    case RecordType::kData: {
      if (!(rec.flags & kRecordFlagXor))
        return Put(global, rec.seq, rec.data, true);
      uint8_t x[kChunkSize];
      const uint8_t* b = base_->Chunk(rec.region, rec.index);
      for (size_t i = 0; i < kChunkSize; i++) x[i] = rec.data[i] ^ b[i];
      return Put(global, rec.seq, x, true);
    }
    case RecordType::kBaseRef:
      if (!g.Contains(rec.src_region, rec.src_index))
        return Status(HANDOFF_E_BAD_BASE_REF,
                      "base reference to chunk " + std::to_string(rec.src_index) +
                          " of region " + std::to_string(rec.src_region) +
                          ", which the base does not have");
      return Put(global, rec.seq, base_->Chunk(rec.src_region, rec.src_index),
                 false);
    case RecordType::kSelfRef: {
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
      pending_[{src, rec.src_seq}].push_back({global, rec.seq});
      return Status::Ok();
    }
    case RecordType::kIteration:
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
    if (is_data && out_of_order_)
      stash_[{global, seq}].assign(reinterpret_cast<const char*>(data),
                                   kChunkSize);
  } else {
    if (out_of_order_ && is_data_[global]) {
      std::string old(kChunkSize, '\0');
      HANDOFF_RETURN_IF_ERROR(
          sink_->Read(region, index, reinterpret_cast<uint8_t*>(old.data())));
      stash_[{global, version_[global]}] = std::move(old);
    }
    HANDOFF_RETURN_IF_ERROR(sink_->Write(region, index, data));
    version_[global] = seq;
    is_data_[global] = is_data;
  }
  if (is_data) {
    auto it = pending_.find({global, seq});
    if (it != pending_.end()) {
      std::vector<Pending> waiting = std::move(it->second);
      pending_.erase(it);
      std::string copy(reinterpret_cast<const char*>(data), kChunkSize);
      for (const Pending& w : waiting)
        HANDOFF_RETURN_IF_ERROR(
            Put(w.global, w.seq, reinterpret_cast<const uint8_t*>(copy.data()),
                false));
    }
  }
  return Status::Ok();
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
  static const char* names[] = {"zero records", "data records",
                                "base references", "self references",
                                "iteration markers"};
  for (size_t i = 0; i < kRecordTypeCount; i++)
    if (end.per_type[i] != per_type_[i])
      return mismatch(names[i], per_type_[i], end.per_type[i]);
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
  s->records[HANDOFF_REC_ZERO] = per_type_[0];
  s->records[HANDOFF_REC_DATA] = per_type_[1];
  s->records[HANDOFF_REC_BASE_REF] = per_type_[2];
  s->records[HANDOFF_REC_SELF_REF] = per_type_[3];
  s->stale_records = stale_;
  s->frames = frames_seen_.size();
  s->stream_bytes = consumed_;
  s->plain_bytes = plain_bytes_;
  s->iteration = iteration_;
}

}  // namespace handoff
