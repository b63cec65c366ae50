// SPDX-License-Identifier: GPL-2.0-or-later
//
// Stream format v2 (kStreamVersion): the constants and layouts of
// docs/stream-format.md.
// Encoder and decoder share this file so that they cannot disagree; the
// document is the authority for anyone writing another decoder.
#ifndef HANDOFF_FORMAT_H
#define HANDOFF_FORMAT_H

#include <cstdint>
#include <string>
#include <vector>

#include "geometry.h"
#include "record_kind.h"
#include "status.h"

namespace handoff {

inline constexpr char kStreamMagic[8] = {'Q', 'H', 'A', 'N',
                                         'D', 'O', 'F', 'F'};
// Version 2 added zero runs (ZERO records with kRecordFlagRun); a decoder
// reads version 1 streams too, which have none.
inline constexpr uint16_t kStreamVersion = 2;
inline constexpr uint16_t kOldestStreamVersion = 1;
// Version 3 is the segmented layout (segment_table.h): the same header,
// then a segment table instead of a sequence of frames.
inline constexpr uint16_t kSegmentedStreamVersion = 3;
inline constexpr uint32_t kFrameTag = 0x4D415246;  // "FRAM"
inline constexpr uint32_t kEndTag = 0x21444E45;    // "END!"

// Magic, version, flags and length: what it takes to know how long the
// header is.
inline constexpr size_t kStreamHeaderPrefix = 16;
inline constexpr size_t kStreamHeaderFixed = 40;    // up to the regions
inline constexpr size_t kStreamHeaderChecksumSize = 8;
inline constexpr uint32_t kMinHeaderLength =
    kStreamHeaderFixed + kStreamHeaderChecksumSize;
inline constexpr uint32_t kMaxHeaderLength = 64 * 1024;
inline constexpr size_t kFrameHeaderSize = 40;
inline constexpr size_t kEndRecordSize = 104;
// Limits protect the decoder: a frame can claim no more than this.
inline constexpr uint32_t kMaxPlainLength = 8u << 20;
inline constexpr uint32_t kMaxPayloadLength = (8u << 20) + (1u << 20);

// The payload starts with a prefix list (prefix_list.h).
inline constexpr uint16_t kFrameFlagPrefix = 1;

struct StreamHeader {
  uint16_t version = kStreamVersion;
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

struct EndRecord {
  uint64_t frame_count = 0;
  uint64_t record_count = 0;
  RecordCounts per_kind;
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

// For tools that damage streams on purpose (the decoder fuzzer mends the
// check values its mutations broke, so that they reach deeper checks).
// Nothing here validates: fields are taken as they are.
//
// The header length a stream header declares (16 bytes needed).
uint32_t DeclaredHeaderLength(const uint8_t* data);
// Recomputes the checksum of a stream header of @header_len bytes.
void ResealStreamHeader(uint8_t* data, size_t header_len);
// The fields of a frame header as they are; SerializeFrameHeader writes
// them back with a matching check value.
FrameHeader ReadFrameHeaderUnchecked(const uint8_t* data);
// Makes the end record at @stream + @at describe the @at stream bytes
// before it (length, digest) and recomputes its checksum.
void ResealEndRecord(uint8_t* stream, size_t at);

}  // namespace handoff

#endif  // HANDOFF_FORMAT_H
