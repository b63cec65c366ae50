// SPDX-License-Identifier: GPL-2.0-or-later
//
// Lays out the records of a segmented stream (stream version 3): remote
// records (DATA, SELF_REF) into segments of at most 64 KiB, one frame
// each, filled while the compressed frame fits; local records (ZERO,
// zero runs, BASE_REF) into the frames of the table part. The order of
// remote records is the writer's (segment_writer.h); the packer only cuts
// it, so a self reference's source stays before it.
#ifndef HANDOFF_SEGMENT_PACKER_H
#define HANDOFF_SEGMENT_PACKER_H

#include <cstdint>
#include <string>
#include <vector>

#include "base.h"
#include "codec.h"
#include "record.h"

namespace handoff {

struct RemoteRecord {
  Record rec;                 // kData (data points at the chunk) or kSelfRef
  size_t source = SIZE_MAX;   // kSelfRef: position of its source DATA
};

// What encoding frames produced, for the encoder's statistics.
struct FrameTally {
  uint64_t plain_bytes = 0;   // plaintext bytes of the frames
  uint64_t xor_chunks = 0;    // DATA records sent as XOR deltas
};

struct PackedSegments {
  std::vector<std::string> segments;          // stored bytes, in order
  std::vector<std::vector<uint32_t>> deps;    // per segment, increasing
  std::vector<uint32_t> segment_of;           // per record
  FrameTally tally;                           // of the frames kept
};

// Packs @records (in stream order; PINNED already set on sources) into
// segments whose frames are numbered from @first_frame, compressing on
// up to @threads threads. The result does not depend on @threads.
Status PackSegments(const Base& base, const HandoffMode& mode,
                    uint64_t first_frame,
                    const std::vector<RemoteRecord>& records, unsigned threads,
                    PackedSegments* out);

// One frame holding @records, as EncodeFrame makes it (mode, XOR pass,
// prefix list for DATA in PREFIX mode, stored when smaller); *@tally is
// this frame's alone.
Status EncodeRecordFrame(const Base& base, Compressor* compressor,
                         const HandoffMode& mode, uint64_t frame_seq,
                         const Record* records, size_t count,
                         std::string* frame, FrameTally* tally);

}  // namespace handoff

#endif  // HANDOFF_SEGMENT_PACKER_H
