// SPDX-License-Identifier: GPL-2.0-or-later
#include "remaining.h"

namespace handoff {
namespace {

// Stream bytes one more chunk is expected to cost. Chunks equal to the
// base cost nothing, but chunks dirtied again rarely are: price the rest
// at what the chunks actually sent cost (a quarter chunk before any).
double BytesPerChunk(const HandoffEncoderStats& st) {
  // Zero runs are neither submitted nor priced like submitted chunks.
  uint64_t sent = 0;
  for (int k = 0; k < HANDOFF_REC_KINDS; k++)
    if (k != HANDOFF_REC_SAME && k != HANDOFF_REC_ZERO_RUN) sent += st.chunks[k];
  return sent ? static_cast<double>(st.output_bytes) / sent
              : HANDOFF_CHUNK_SIZE / 4.0;
}

}  // namespace

uint64_t RemainingBytes(const HandoffEncoderStats& st,
                        uint64_t chunks_to_submit) {
  double frame_ratio =
      st.plain_bytes ? static_cast<double>(st.output_bytes) / st.plain_bytes
                     : 1.0;
  return static_cast<uint64_t>(chunks_to_submit * BytesPerChunk(st) +
                               st.unencoded_bytes * frame_ratio) +
         st.pending_bytes;
}

}  // namespace handoff
