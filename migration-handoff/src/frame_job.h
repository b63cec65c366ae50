// SPDX-License-Identifier: GPL-2.0-or-later
//
// FrameJob: one batch of records on its way to becoming a frame. The
// producer fills the plaintext; a worker compresses it (EncodeFrame) and
// the pipeline emits the bytes in frame order.
#ifndef HANDOFF_FRAME_JOB_H
#define HANDOFF_FRAME_JOB_H

#include <cstdint>
#include <string>
#include <vector>

#include "base.h"
#include "codec.h"
#include "handoff.h"
#include "status.h"

namespace handoff {

struct FrameJob {
  // Filled by the producer.
  uint64_t frame_seq = 0;
  HandoffMode mode = {HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE};
  size_t mode_index = 0;
  std::string plain;
  std::vector<uint64_t> prefix;  // base global chunks, PREFIX mode only
  uint32_t records = 0;
  uint64_t data_bytes = 0;       // bytes of DATA records (controller input)
  bool raw = false;              // bytes already final (header, end record)
  bool counted = false;          // holds a pipeline slot until emitted
  uint64_t queued_plain = 0;     // plain.size() while it waits for a worker
  // Filled by the worker.
  uint64_t xor_chunks = 0;       // DATA records turned into XOR deltas
  std::string bytes;
  double cpu_s = 0;
  Status status;
};

// Compresses job->plain into job->bytes (frame header + payload). Falls
// back to stored when compression would expand the data. In XOR mode it
// first replaces each DATA chunk by its XOR with the same-offset base chunk
// when that has more zero words.
void EncodeFrame(const Base& base, Compressor* compressor, FrameJob* job);

}  // namespace handoff

#endif  // HANDOFF_FRAME_JOB_H
