// SPDX-License-Identifier: GPL-2.0-or-later
#include "format.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include "byte_io.h"

namespace handoff {
namespace {

// Stream header fields, after the 8-byte magic; the base ID, chunk size
// and region table follow.
constexpr size_t kHeaderVersionAt = 8;       // u16
constexpr size_t kHeaderFlagsAt = 10;        // u16
constexpr size_t kHeaderLengthAt = 12;       // u32
constexpr size_t kHeaderBaseIdAt = 16;       // 16 bytes
// Frame header fields.
constexpr size_t kFrameTagAt = 0;            // u32
constexpr size_t kFrameCodecAt = 4;          // u8
constexpr size_t kFrameLevelAt = 5;          // i8
constexpr size_t kFrameFlagsAt = 6;          // u16
constexpr size_t kFramePayloadLengthAt = 8;  // u32
constexpr size_t kFramePlainLengthAt = 12;   // u32
constexpr size_t kFrameSeqAt = 16;           // u64
constexpr size_t kFramePlainChecksumAt = 24; // u64
constexpr size_t kFrameRecordCountAt = 32;   // u32
constexpr size_t kFrameCheckAt = 36;         // u32, covers [0, 36)
// End record fields.
constexpr size_t kEndReservedAt = 4;         // u32, 0
constexpr size_t kEndCountsAt = 8;           // frames .. stream bytes
constexpr size_t kEndStreamBytesAt = 72;     // u64
constexpr size_t kEndDigestAt = 80;          // 16 bytes
constexpr size_t kEndChecksumAt = 96;        // u64, covers [0, 96)

// Reads the region count and table that end the stream header (@r holds
// exactly the bytes before the checksum).
Status ReadRegionTable(ByteReader* r, Geometry* out) {
  uint32_t count = r->Get<uint32_t>();
  if (count == 0 || count > HANDOFF_MAX_REGIONS)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "region count " + std::to_string(count) + " outside 1.." +
                      std::to_string(HANDOFF_MAX_REGIONS));
  std::vector<Region> regions;
  for (uint32_t i = 0; i < count; i++) {
    Region region;
    uint8_t kind = r->Get<uint8_t>();
    uint8_t name_len = r->Get<uint8_t>();
    const uint8_t* name = r->GetBytes(name_len);
    region.size = r->Get<uint64_t>();
    if (r->overrun())
      return Status(HANDOFF_E_BAD_GEOMETRY,
                    "region table runs past the header length");
    // Checked before it becomes an enum: other values are not
    // representable as HandoffRegionKind.
    if (kind > HANDOFF_REGION_DISK)
      return Status(HANDOFF_E_BAD_GEOMETRY,
                    "region " + std::to_string(i) + " has unknown kind " +
                        std::to_string(kind));
    region.kind = static_cast<HandoffRegionKind>(kind);
    region.name.assign(reinterpret_cast<const char*>(name), name_len);
    regions.push_back(std::move(region));
  }
  if (r->remaining() != 0)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "stream header has bytes after the region table");
  *out = Geometry(std::move(regions));
  return out->Validate();
}

}  // namespace

uint64_t Checksum64(const void* data, size_t len) {
  return XXH3_64bits(data, len);
}

std::string SerializeStreamHeader(const StreamHeader& header) {
  std::string out;
  ByteWriter w(&out);
  w.PutBytes(kStreamMagic, sizeof(kStreamMagic));
  w.Put<uint16_t>(header.version);
  w.Put<uint16_t>(0);  // flags
  w.Put<uint32_t>(0);  // header length, patched below
  w.PutBytes(header.base_id, 16);
  w.Put<uint32_t>(kChunkSize);
  w.Put<uint32_t>(static_cast<uint32_t>(header.geometry.region_count()));
  for (const Region& r : header.geometry.regions()) {
    w.Put<uint8_t>(static_cast<uint8_t>(r.kind));
    w.Put<uint8_t>(static_cast<uint8_t>(r.name.size()));
    w.PutBytes(r.name.data(), r.name.size());
    w.Put<uint64_t>(r.size);
  }
  StoreLe<uint32_t>(reinterpret_cast<uint8_t*>(out.data()) + kHeaderLengthAt,
                    static_cast<uint32_t>(out.size() + kStreamHeaderChecksumSize));
  w.Put<uint64_t>(Checksum64(out.data(), out.size()));
  return out;
}

Status ParseStreamHeader(const uint8_t* data, size_t len, StreamHeader* out,
                         size_t* consumed, size_t* needed) {
  *needed = 0;
  if (len < kStreamHeaderPrefix) {
    // Reject a wrong magic as early as its bytes are known.
    if (std::memcmp(data, kStreamMagic, len < 8 ? len : 8) != 0)
      return Status(HANDOFF_E_BAD_MAGIC, "stream does not start with QHANDOFF");
    *needed = kStreamHeaderPrefix;
    return Status(HANDOFF_E_TRUNCATED, "stream header incomplete");
  }
  if (std::memcmp(data, kStreamMagic, 8) != 0)
    return Status(HANDOFF_E_BAD_MAGIC, "stream does not start with QHANDOFF");
  uint16_t version = LoadLe<uint16_t>(data + kHeaderVersionAt);
  if (version < kOldestStreamVersion || version > kSegmentedStreamVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "stream format version " + std::to_string(version) +
                      " (this decoder reads " +
                      std::to_string(kOldestStreamVersion) + " to " +
                      std::to_string(kSegmentedStreamVersion) + ")");
  uint16_t flags = LoadLe<uint16_t>(data + kHeaderFlagsAt);
  if (flags != 0)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "stream header flags " + std::to_string(flags) +
                      " not understood");
  uint32_t header_len = DeclaredHeaderLength(data);
  if (header_len < kMinHeaderLength || header_len > kMaxHeaderLength)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "stream header length " + std::to_string(header_len) +
                      " outside 48..65536");
  if (len < header_len) {
    *needed = header_len;
    return Status(HANDOFF_E_TRUNCATED, "stream header incomplete");
  }
  const size_t sum_at = header_len - kStreamHeaderChecksumSize;
  if (LoadLe<uint64_t>(data + sum_at) != Checksum64(data, sum_at))
    return Status(HANDOFF_E_HEADER_CORRUPT, "stream header checksum mismatch");

  ByteReader r(data + kHeaderBaseIdAt, sum_at - kHeaderBaseIdAt);
  std::memcpy(out->base_id, r.GetBytes(16), 16);
  uint32_t chunk_size = r.Get<uint32_t>();
  if (chunk_size != kChunkSize)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "chunk size " + std::to_string(chunk_size) +
                      " (format v1 requires 4096)");
  HANDOFF_RETURN_IF_ERROR(ReadRegionTable(&r, &out->geometry));
  out->version = version;
  *consumed = header_len;
  return Status::Ok();
}

void SerializeFrameHeader(const FrameHeader& h, uint8_t out[kFrameHeaderSize]) {
  StoreLe<uint32_t>(out + kFrameTagAt, kFrameTag);
  out[kFrameCodecAt] = h.codec;
  out[kFrameLevelAt] = static_cast<uint8_t>(h.level);
  StoreLe<uint16_t>(out + kFrameFlagsAt, h.flags);
  StoreLe<uint32_t>(out + kFramePayloadLengthAt, h.payload_length);
  StoreLe<uint32_t>(out + kFramePlainLengthAt, h.plain_length);
  StoreLe<uint64_t>(out + kFrameSeqAt, h.frame_seq);
  StoreLe<uint64_t>(out + kFramePlainChecksumAt, h.plain_checksum);
  StoreLe<uint32_t>(out + kFrameRecordCountAt, h.record_count);
  StoreLe<uint32_t>(out + kFrameCheckAt,
                    static_cast<uint32_t>(Checksum64(out, kFrameCheckAt)));
}

FrameHeader ReadFrameHeaderUnchecked(const uint8_t* p) {
  FrameHeader h;
  h.codec = p[kFrameCodecAt];
  h.level = static_cast<int8_t>(p[kFrameLevelAt]);
  h.flags = LoadLe<uint16_t>(p + kFrameFlagsAt);
  h.payload_length = LoadLe<uint32_t>(p + kFramePayloadLengthAt);
  h.plain_length = LoadLe<uint32_t>(p + kFramePlainLengthAt);
  h.frame_seq = LoadLe<uint64_t>(p + kFrameSeqAt);
  h.plain_checksum = LoadLe<uint64_t>(p + kFramePlainChecksumAt);
  h.record_count = LoadLe<uint32_t>(p + kFrameRecordCountAt);
  return h;
}

Status ParseFrameHeader(const uint8_t* p, FrameHeader* h) {
  uint32_t tag = LoadLe<uint32_t>(p + kFrameTagAt);
  if (tag != kFrameTag)
    return Status(HANDOFF_E_BAD_FRAME_TAG,
                  "expected a frame or end record, found tag 0x" + [&] {
                    char b[9];
                    snprintf(b, sizeof(b), "%08x", tag);
                    return std::string(b);
                  }());
  if (LoadLe<uint32_t>(p + kFrameCheckAt) !=
      static_cast<uint32_t>(Checksum64(p, kFrameCheckAt)))
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "frame header checksum mismatch");
  *h = ReadFrameHeaderUnchecked(p);
  if ((h->flags & ~kFrameFlagPrefix) != 0)
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "frame flags " + std::to_string(h->flags) + " not understood");
  if (h->payload_length > kMaxPayloadLength)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "frame payload length " + std::to_string(h->payload_length) +
                      " beyond limit " + std::to_string(kMaxPayloadLength));
  if (h->plain_length > kMaxPlainLength)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "frame plaintext length " + std::to_string(h->plain_length) +
                      " beyond limit " + std::to_string(kMaxPlainLength));
  return Status::Ok();
}

std::string SerializeEndRecord(const EndRecord& e) {
  std::string out;
  ByteWriter w(&out);
  w.Put<uint32_t>(kEndTag);
  w.Put<uint32_t>(0);
  w.Put<uint64_t>(e.frame_count);
  w.Put<uint64_t>(e.record_count);
  for (RecordKind k : kAllRecordKinds) w.Put<uint64_t>(e.per_kind[k]);
  w.Put<uint64_t>(e.plain_bytes);
  w.Put<uint64_t>(e.stream_bytes);
  w.PutBytes(e.digest, 16);
  w.Put<uint64_t>(Checksum64(out.data(), out.size()));
  return out;
}

Status ParseEndRecord(const uint8_t* p, EndRecord* e) {
  if (LoadLe<uint64_t>(p + kEndChecksumAt) != Checksum64(p, kEndChecksumAt))
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "end record checksum mismatch");
  if (LoadLe<uint32_t>(p + kEndReservedAt) != 0)
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "end record reserved field not zero");
  ByteReader r(p + kEndCountsAt, kEndChecksumAt - kEndCountsAt);
  e->frame_count = r.Get<uint64_t>();
  e->record_count = r.Get<uint64_t>();
  for (RecordKind k : kAllRecordKinds) e->per_kind[k] = r.Get<uint64_t>();
  e->plain_bytes = r.Get<uint64_t>();
  e->stream_bytes = r.Get<uint64_t>();
  std::memcpy(e->digest, r.GetBytes(16), 16);
  return Status::Ok();
}

uint32_t DeclaredHeaderLength(const uint8_t* data) {
  return LoadLe<uint32_t>(data + kHeaderLengthAt);
}

void ResealStreamHeader(uint8_t* data, size_t header_len) {
  const size_t sum_at = header_len - kStreamHeaderChecksumSize;
  StoreLe<uint64_t>(data + sum_at, Checksum64(data, sum_at));
}

void ResealEndRecord(uint8_t* stream, size_t at) {
  uint8_t* e = stream + at;
  StoreLe<uint64_t>(e + kEndStreamBytesAt, at);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(stream, at));
  std::memcpy(e + kEndDigestAt, c.digest, sizeof(c.digest));
  StoreLe<uint64_t>(e + kEndChecksumAt, Checksum64(e, kEndChecksumAt));
}

}  // namespace handoff
