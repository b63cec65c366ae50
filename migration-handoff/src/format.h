// SPDX-License-Identifier: GPL-2.0-or-later
//
// Stream format v1: the constants and layouts of docs/stream-format.md.
// Encoder and decoder share this file so that they cannot disagree; the
// document is the authority for anyone writing another decoder.
#ifndef HANDOFF_FORMAT_H
#define HANDOFF_FORMAT_H

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "geometry.h"
#include "status.h"

namespace handoff {

inline constexpr char kStreamMagic[8] = {'Q', 'H', 'A', 'N',
                                         'D', 'O', 'F', 'F'};
inline constexpr uint16_t kStreamVersion = 1;
inline constexpr uint32_t kFrameTag = 0x4D415246;  // "FRAM"
inline constexpr uint32_t kEndTag = 0x21444E45;    // "END!"

inline constexpr size_t kStreamHeaderFixed = 40;
inline constexpr uint32_t kMaxHeaderLength = 64 * 1024;
inline constexpr size_t kFrameHeaderSize = 40;
inline constexpr size_t kEndRecordSize = 104;
// Limits protect the decoder: a frame can claim no more than this.
inline constexpr uint32_t kMaxPlainLength = 8u << 20;
inline constexpr uint32_t kMaxPayloadLength = (8u << 20) + (1u << 20);
inline constexpr uint32_t kMaxPrefixChunks = kMaxPlainLength / kChunkSize;

inline constexpr uint16_t kFrameFlagPrefix = 1;

// Record types inside frame plaintext. Values are part of the format.
enum class RecordType : uint8_t {
  kZero = 1,
  kData = 2,
  kBaseRef = 3,
  kSelfRef = 4,
  kIteration = 5,
};
inline constexpr uint8_t kRecordFlagXor = 1;
inline constexpr size_t kRecordHeaderSize = 24;
inline constexpr size_t kBaseRefBodySize = 16;
inline constexpr size_t kSelfRefBodySize = 24;

struct StreamHeader {
  uint8_t base_id[16] = {};
  Geometry geometry;
};

struct FrameHeader {
  uint8_t codec = 0;
  int8_t level = 0;
  uint16_t flags = 0;
  uint32_t payload_length = 0;
  uint32_t plain_length = 0;
  uint64_t frame_seq = 0;
  uint64_t plain_checksum = 0;
  uint32_t record_count = 0;
};

// Counters indexed by RecordType value - 1.
inline constexpr size_t kRecordTypeCount = 5;

struct EndRecord {
  uint64_t frame_count = 0;
  uint64_t record_count = 0;
  std::array<uint64_t, kRecordTypeCount> per_type = {};
  uint64_t plain_bytes = 0;
  uint64_t stream_bytes = 0;  // bytes before the end record
  uint8_t digest[16] = {};    // XXH3-128 of those bytes
};

std::string SerializeStreamHeader(const StreamHeader& header);
// Parses a complete header from @data. Returns HANDOFF_E_TRUNCATED with
// *needed set when more bytes are required to decide.
Status ParseStreamHeader(const uint8_t* data, size_t len, StreamHeader* out,
                         size_t* consumed, size_t* needed);

void SerializeFrameHeader(const FrameHeader& header,
                          uint8_t out[kFrameHeaderSize]);
Status ParseFrameHeader(const uint8_t* data, FrameHeader* out);

std::string SerializeEndRecord(const EndRecord& end);
Status ParseEndRecord(const uint8_t* data, EndRecord* out);

uint64_t Checksum64(const void* data, size_t len);

}  // namespace handoff

#endif  // HANDOFF_FORMAT_H
