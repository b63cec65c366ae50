// SPDX-License-Identifier: GPL-2.0-or-later
//
// Finding the parts of a stream (header, frames, end record) from their
// tags and frame headers alone: nothing is decompressed or applied, and
// no length is used before it is checked against the bytes at hand. The
// decoder finds each part of what it is fed this way; handoff_stream_split
// and `qemu-handoff inspect` walk whole streams in memory.
#ifndef HANDOFF_STREAM_WALKER_H
#define HANDOFF_STREAM_WALKER_H

#include <cstddef>
#include <cstdint>

#include "format.h"
#include "status.h"

namespace handoff {

struct StreamPart {
  bool is_end = false;  // the end record; otherwise a frame
  uint64_t offset = 0;  // in the stream
  size_t size = 0;      // frame header and payload, or kEndRecordSize
  FrameHeader frame;    // a frame's header, checked by ParseFrameHeader
};

// Finds the part that starts at @p, of which @avail bytes are at hand.
// HANDOFF_E_TRUNCATED when they end before the part does; otherwise the
// error of an unknown tag or a bad frame header. @offset (where @p is in
// the stream) and @frames (frames before it) are for *part and messages.
Status FindStreamPart(const uint8_t* p, size_t avail, uint64_t offset,
                      uint64_t frames, StreamPart* part);

// Walks a stream held whole in memory: the header, then one part per Next
// until the end record.
class StreamWalker {
 public:
  StreamWalker(const uint8_t* data, size_t len) : data_(data), len_(len) {}

  // Parses the header (see ParseStreamHeader: on HANDOFF_E_TRUNCATED,
  // *needed is the length it takes to go on).
  Status ReadHeader(StreamHeader* header, size_t* needed);
  // Finds the next part and steps past it. After the end record there is
  // no next part: what follows it is for the caller to judge.
  Status Next(StreamPart* part);

  size_t header_size() const { return header_size_; }
  uint64_t frames() const { return frames_; }

 private:
  const uint8_t* data_;
  size_t len_;
  size_t header_size_ = 0;
  size_t pos_ = 0;
  uint64_t frames_ = 0;
};

}  // namespace handoff

#endif  // HANDOFF_STREAM_WALKER_H
