// SPDX-License-Identifier: GPL-2.0-or-later
//
// The decoder's side of segmented streams (stream version 3). A segment is
// checked whole (number, not applied yet, length, SHA-256, dependencies)
// before any of its bytes is decoded, so nothing unauthenticated reaches
// the writer. Records apply once per chunk; self references resolve from
// pinned versions, never from the destination.
#include <algorithm>
#include <cstring>

#include "decoder.h"
#include "segment_reader.h"

namespace handoff {
namespace {


std::string SegmentName(const SegmentTable& t, uint32_t k) {
  return "segment " + std::to_string(k) + " of " +
         std::to_string(t.entries.size()) + " (offset " +
         std::to_string(t.table_len + t.entries[k].offset) + ")";
}

}  // namespace

Status Decoder::LoadTable(const uint8_t* table, size_t len,
                          const uint8_t* root) {
  if (state_ == State::kFailed) return failure_;
  if (table == nullptr) return Status(HANDOFF_E_INVALID_ARGUMENT, "null table");
  if (state_ != State::kHeader || !buf_.empty())
    return Status(HANDOFF_E_STATE, "a segment table loads before anything else");
  return Fail(LoadCheckedTable(table, len, root));
}

Status Decoder::LoadCheckedTable(const uint8_t* table, size_t len,
                                 const uint8_t* root) {
  HANDOFF_RETURN_IF_ERROR(CheckRoot(table, len, root));
  auto st = std::make_unique<SegmentState>();
  HANDOFF_RETURN_IF_ERROR(ParseSegmentTable(table, len, &st->table));
  HANDOFF_RETURN_IF_ERROR(CheckHeader(st->table.header));
  const size_t n = st->table.entries.size();
  st->applied.assign(n, 0);
  st->dependents_left.assign(n, 0);
  for (uint32_t k = 0; k < n; k++)
    for (uint32_t i = 0; i < st->table.entries[k].dep_count; i++)
      st->dependents_left[st->table.DepsOf(k)[i]]++;
  segments_ = std::move(st);
  state_ = State::kSegments;
  out_of_order_ = true;
  consumed_ += len;
  const std::string& local = segments_->table.local;
  Status s = ApplyFramesOf(reinterpret_cast<const uint8_t*>(local.data()),
                           local.size(), segments_->table.local_frames);
  if (!s.ok()) return Status(s.code(), "table part: " + s.message());
  return Status::Ok();
}

Status Decoder::ApplySegment(uint32_t number, const uint8_t* bytes,
                             size_t len) {
  if (state_ == State::kFailed) return failure_;
  if (bytes == nullptr && len != 0)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "null segment");
  if (!segments_ || state_ != State::kSegments || segments_->fed)
    return Status(HANDOFF_E_STATE,
                  "segments apply after handoff_decoder_load_table");
  Status s = CheckSegment(number, bytes, len);
  // Neither is a fault of the stream: the caller sent a segment twice, or
  // early. The decoder goes on.
  if (s.code() == HANDOFF_E_SEGMENT_DUPLICATE ||
      s.code() == HANDOFF_E_SEGMENT_DEPENDENCY)
    return s;
  HANDOFF_RETURN_IF_ERROR(Fail(s));
  return Fail(DecodeSegment(number, bytes, len));
}

Status Decoder::CheckSegment(uint32_t number, const uint8_t* bytes,
                             size_t len) const {
  const SegmentState& st = *segments_;
  const SegmentTable& t = st.table;
  if (number >= t.entries.size())
    return Status(HANDOFF_E_BAD_SEGMENT,
                  "segment " + std::to_string(number) + " of " +
                      std::to_string(t.entries.size()) + " does not exist");
  const std::string name = SegmentName(t, number);
  if (st.applied[number])
    return Status(HANDOFF_E_SEGMENT_DUPLICATE,
                  name + " applied already: dropped");
  const SegmentEntry& e = t.entries[number];
  if (len != e.length)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  name + " is " + std::to_string(len) +
                      " bytes, the table says " + std::to_string(e.length));
  Sha256Digest got;
  HANDOFF_RETURN_IF_ERROR(Sha256(bytes, len, &got));
  if (got != e.sha256)
    return Status(HANDOFF_E_SEGMENT_DIGEST,
                  name + " fails its SHA-256: the stream is corrupt");
  std::string missing;
  for (uint32_t i = 0; i < e.dep_count; i++) {
    const uint32_t d = t.DepsOf(number)[i];
    if (!st.applied[d]) missing += (missing.empty() ? "" : ", ") + std::to_string(d);
  }
  if (!missing.empty())
    return Status(HANDOFF_E_SEGMENT_DEPENDENCY,
                  name + " needs segments " + missing + " applied first");
  return Status::Ok();
}

Status Decoder::DecodeSegment(uint32_t number, const uint8_t* bytes,
                              size_t len) {
  SegmentState& st = *segments_;
  const std::string name = SegmentName(st.table, number);
  SegmentHeader h;
  Status s = ParseSegmentHeader(bytes, len, &h);
  if (s.ok() && h.number != number)
    s = Status(HANDOFF_E_BAD_SEGMENT,
               "its header says segment " + std::to_string(h.number));
  if (s.ok()) {
    st.current = number;
    st.current_flags = h.flags;
    s = ApplyFramesOf(bytes + kSegmentHeaderSize, len - kSegmentHeaderSize,
                      h.frame_count);
  }
  if (!s.ok()) return Status(s.code(), name + ": " + s.message());
  consumed_ += len;
  SegmentDone(number);
  return Status::Ok();
}

Status Decoder::ApplyFramesOf(const uint8_t* bytes, size_t len,
                              uint32_t count) {
  size_t pos = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (len - pos < kFrameHeaderSize)
      return Status(HANDOFF_E_BAD_SEGMENT,
                    "frame " + std::to_string(i) + " of " +
                        std::to_string(count) + " runs past the end");
    FrameHeader h;
    HANDOFF_RETURN_IF_ERROR(ParseFrameHeader(bytes + pos, &h));
    const size_t frame_len = kFrameHeaderSize + size_t{h.payload_length};
    if (frame_len > len - pos)
      return Status(HANDOFF_E_BAD_SEGMENT,
                    "frame " + std::to_string(h.frame_seq) +
                        " runs past the end");
    HANDOFF_RETURN_IF_ERROR(ProcessFrame(h, bytes + pos, frame_len, false));
    pos += frame_len;
  }
  if (pos != len)
    return Status(HANDOFF_E_BAD_SEGMENT,
                  std::to_string(len - pos) + " bytes after the last frame");
  return Status::Ok();
}

}  // namespace handoff
