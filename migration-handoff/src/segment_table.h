// SPDX-License-Identifier: GPL-2.0-or-later
//
// Stream version 3, "segmented" (docs/stream-format.md, "Segmented
// streams"): the table part (stream header, segment table, dependency
// array, local-record frames) and the segment header. The table part is
// what a caller authenticates with one SHA-256 (the root); it holds the
// SHA-256 of every segment, so each segment is checked on its own, before
// a byte of it is decoded, in whatever order segments arrive. Writer and
// reader share this file so that they cannot disagree.
#ifndef HANDOFF_SEGMENT_TABLE_H
#define HANDOFF_SEGMENT_TABLE_H

#include <cstdint>
#include <string>
#include <vector>

#include "chunk_index.h"
#include "format.h"
#include "handoff.h"
#include "sha256.h"

namespace handoff {

inline constexpr uint32_t kTableTag = 0x42415451;    // "QTAB"
inline constexpr uint32_t kSegmentTag = 0x47455351;  // "QSEG"
inline constexpr uint32_t kMaxSegmentBytes = HANDOFF_SEGMENT_MAX_BYTES;
inline constexpr size_t kSegmentHeaderSize = 16;
inline constexpr size_t kTableFixedSize = 40;    // tag .. index bytes
inline constexpr size_t kSegmentEntrySize = 48;
inline constexpr size_t kTableChecksumSize = 8;
// Bounds on what a table may declare, checked before anything is sized
// by it: 2^22 segments of 64 KiB are 256 GiB of remote records; an entry
// names its dependencies with a u16 start and a u16 count.
inline constexpr uint32_t kMaxSegments = 1u << 22;
inline constexpr uint32_t kMaxDependencies = 2 * 0xFFFFu;
inline constexpr uint64_t kMaxLocalBytes = 256ull << 20;
// Segment flags: the kinds of region its records write.
inline constexpr uint32_t kSegmentFlagMemory = 1;
inline constexpr uint32_t kSegmentFlagDisk = 2;
inline constexpr uint32_t kSegmentFlagsKnown =
    kSegmentFlagMemory | kSegmentFlagDisk;
// What a pinned DATA version costs a segmented decoder while it waits for
// its last referrer: its bytes and their bookkeeping, counted against
// HANDOFF_DECODER_MAX_HELD_BYTES. The writer refuses a stream whose pins
// could exceed that limit.
inline constexpr uint64_t kPinCost = kChunkSize + 192;

struct SegmentEntry {
  uint64_t offset = 0;  // from the end of the table part
  uint32_t length = 0;  // stored bytes, segment header included
  uint16_t dep_first = 0;
  uint16_t dep_count = 0;
  Sha256Digest sha256 = {};
};

struct SegmentTable {
  StreamHeader header;
  std::vector<SegmentEntry> entries;
  std::vector<uint32_t> deps;  // entry k: deps[dep_first, +dep_count)
  uint32_t local_frames = 0;
  std::vector<IndexExtent> index;  // sorted by region, then first
  uint64_t indexed_chunks = 0;     // chunks the extents cover
  std::string local;           // the local-record frames, back to back
  uint64_t table_len = 0;      // bytes of the table part
  uint64_t segment_bytes = 0;  // bytes of all segments

  const uint32_t* DepsOf(uint32_t k) const {
    return deps.data() + entries[k].dep_first;
  }
};

// The table part of @table (whose table_len, segment_bytes and
// indexed_chunks it ignores): header, fixed fields, entries,
// dependencies, chunk index, local frames, checksum.
Status SerializeSegmentTable(const SegmentTable& table, std::string* out);

// Length of the table part that starts at @p, from its header and fixed
// fields. HANDOFF_E_TRUNCATED with *@needed set when @len bytes do not
// tell yet; limits are checked first, so the length is bounded.
Status SegmentTableLength(const uint8_t* p, size_t len, uint64_t* table_len,
                          size_t* needed);

// Parses exactly one table part (@len must be its length) into *@out,
// checking every field: HANDOFF_E_BAD_SEGMENT for a structure that is
// not a table, HANDOFF_E_LENGTH_LIMIT for counts beyond the bounds above.
Status ParseSegmentTable(const uint8_t* p, size_t len, SegmentTable* out);

// The root check, first of all: SHA-256 of the @len bytes of a table part
// against @root (nothing to check when null), HANDOFF_E_ROOT_MISMATCH.
Status CheckRoot(const uint8_t* table, size_t len, const uint8_t* root);

struct SegmentHeader {
  uint32_t number = 0;
  uint32_t frame_count = 0;
  uint32_t flags = 0;
};

void SerializeSegmentHeader(const SegmentHeader& h,
                            uint8_t out[kSegmentHeaderSize]);
// Checks tag, flags and a frame count the @len segment bytes can hold.
Status ParseSegmentHeader(const uint8_t* p, size_t len, SegmentHeader* out);

}  // namespace handoff

#endif  // HANDOFF_SEGMENT_TABLE_H
