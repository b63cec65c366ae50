// SPDX-License-Identifier: GPL-2.0-or-later
//
// Chunk records: the plaintext of a frame is a sequence of these (layout
// in docs/stream-format.md). Writers append to a frame being built;
// ParseRecord reads one back without trusting any field.
#ifndef HANDOFF_RECORD_H
#define HANDOFF_RECORD_H

#include <cstdint>
#include <string>

#include "byte_io.h"
#include "format.h"

namespace handoff {

struct Record {
  RecordType type = RecordType::kZero;
  uint8_t region = 0;
  uint8_t flags = 0;
  uint32_t iteration = 0;
  uint64_t seq = 0;
  uint64_t index = 0;
  // BASE_REF / SELF_REF source; SELF_REF source sequence number.
  uint8_t src_region = 0;
  uint64_t src_index = 0;
  uint64_t src_seq = 0;
  const uint8_t* data = nullptr;  // DATA: 4096 bytes inside the plaintext
};

inline void WriteRecordHeader(uint8_t* h, RecordType type, uint8_t region,
                              uint8_t flags, uint32_t iteration, uint64_t seq,
                              uint64_t index) {
  h[0] = static_cast<uint8_t>(type);
  h[1] = region;
  h[2] = flags;
  h[3] = 0;
  StoreLe<uint32_t>(h + 4, iteration);
  StoreLe<uint64_t>(h + 8, seq);
  StoreLe<uint64_t>(h + 16, index);
}

inline void AppendRecordHeader(std::string* out, RecordType type,
                               uint8_t region, uint8_t flags,
                               uint32_t iteration, uint64_t seq,
                               uint64_t index) {
  uint8_t h[kRecordHeaderSize];
  WriteRecordHeader(h, type, region, flags, iteration, seq, index);
  out->append(reinterpret_cast<const char*>(h), sizeof(h));
}

inline void AppendRef(std::string* out, uint8_t src_region,
                      uint64_t src_index) {
  uint8_t b[kBaseRefBodySize] = {};
  b[0] = src_region;
  StoreLe<uint64_t>(b + 8, src_index);
  out->append(reinterpret_cast<const char*>(b), sizeof(b));
}

inline void AppendSelfRef(std::string* out, uint8_t src_region,
                          uint64_t src_index, uint64_t src_seq) {
  uint8_t b[kSelfRefBodySize] = {};
  b[0] = src_region;
  StoreLe<uint64_t>(b + 8, src_index);
  StoreLe<uint64_t>(b + 16, src_seq);
  out->append(reinterpret_cast<const char*>(b), sizeof(b));
}

// Reads the record at @r. Checks only what needs no context: type, flags,
// reserved bytes and length. HANDOFF_E_BAD_RECORD on failure.
Status ParseRecord(ByteReader* r, Record* rec);

}  // namespace handoff

#endif  // HANDOFF_RECORD_H
