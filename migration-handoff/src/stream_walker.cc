// SPDX-License-Identifier: GPL-2.0-or-later
#include "stream_walker.h"

#include <cstdio>
#include <string>

#include "byte_io.h"

namespace handoff {
namespace {

constexpr size_t kTagSize = 4;

Status Truncated(const std::string& why) {
  return Status(HANDOFF_E_TRUNCATED, "stream truncated " + why);
}

}  // namespace

Status FindStreamPart(const uint8_t* p, size_t avail, uint64_t offset,
                      uint64_t frames, StreamPart* part) {
  const std::string at = " at byte " + std::to_string(offset);
  const std::string frame = "frame " + std::to_string(frames);
  if (avail < kTagSize)
    return Truncated("at byte " + std::to_string(offset) + " after " +
                     std::to_string(frames) + " frame(s), before its end record");
  *part = StreamPart();
  part->offset = offset;
  const uint32_t tag = LoadLe<uint32_t>(p);
  if (tag == kEndTag) {
    if (avail < kEndRecordSize)
      return Truncated("inside its end record" + at + " (" +
                       std::to_string(avail) + " of " +
                       std::to_string(kEndRecordSize) + " bytes)");
    part->is_end = true;
    part->size = kEndRecordSize;
    return Status::Ok();
  }
  if (tag != kFrameTag) {
    char b[16];
    snprintf(b, sizeof(b), "%08x", tag);
    return Status(HANDOFF_E_BAD_FRAME_TAG,
                  "expected a frame or the end record" + at +
                      ", found tag 0x" + b);
  }
  if (avail < kFrameHeaderSize)
    return Truncated("inside the header of " + frame + at + " (" +
                     std::to_string(avail) + " of " +
                     std::to_string(kFrameHeaderSize) + " bytes)");
  Status s = ParseFrameHeader(p, &part->frame);
  if (!s.ok()) return Status(s.code(), frame + at + ": " + s.message());
  if (avail - kFrameHeaderSize < part->frame.payload_length)
    return Truncated("inside " + frame + at + ": " +
                     std::to_string(avail - kFrameHeaderSize) + " of its " +
                     std::to_string(part->frame.payload_length) +
                     " payload bytes");
  part->size = kFrameHeaderSize + part->frame.payload_length;
  return Status::Ok();
}

Status StreamWalker::ReadHeader(StreamHeader* header, size_t* needed) {
  if (len_ == 0) {  // the data of an empty file may be null
    *needed = kStreamHeaderPrefix;
    return Status(HANDOFF_E_TRUNCATED, "empty stream");
  }
  size_t consumed = 0;
  HANDOFF_RETURN_IF_ERROR(
      ParseStreamHeader(data_, len_, header, &consumed, needed));
  // A segment table, not frames, follows a version 3 header: walking it
  // as frames would only report its tag as a bad frame tag.
  if (header->version == kSegmentedStreamVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "a segmented (version 3) stream: read its segment table "
                  "instead of walking frames");
  header_size_ = pos_ = consumed;
  return Status::Ok();
}

Status StreamWalker::Next(StreamPart* part) {
  HANDOFF_RETURN_IF_ERROR(
      FindStreamPart(data_ + pos_, len_ - pos_, pos_, frames_, part));
  pos_ += part->size;
  if (!part->is_end) frames_++;
  return Status::Ok();
}

}  // namespace handoff
