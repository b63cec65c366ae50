// SPDX-License-Identifier: GPL-2.0-or-later
#include "format.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

#include "byte_io.h"

namespace handoff {

uint64_t Checksum64(const void* data, size_t len) {
  return XXH3_64bits(data, len);
}

std::string SerializeStreamHeader(const StreamHeader& header) {
  std::string out;
  ByteWriter w(&out);
  w.PutBytes(kStreamMagic, sizeof(kStreamMagic));
  w.Put<uint16_t>(kStreamVersion);
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
  StoreLe<uint32_t>(reinterpret_cast<uint8_t*>(out.data()) + 12,
                    static_cast<uint32_t>(out.size() + 8));
  w.Put<uint64_t>(Checksum64(out.data(), out.size()));
  return out;
}

Status ParseStreamHeader(const uint8_t* data, size_t len, StreamHeader* out,
                         size_t* consumed, size_t* needed) {
  *needed = 0;
  if (len < 16) {
    // Reject a wrong magic as early as its bytes are known.
    if (std::memcmp(data, kStreamMagic, len < 8 ? len : 8) != 0)
      return Status(HANDOFF_E_BAD_MAGIC, "stream does not start with QHANDOFF");
    *needed = 16;
    return Status(HANDOFF_E_TRUNCATED, "stream header incomplete");
  }
  if (std::memcmp(data, kStreamMagic, 8) != 0)
    return Status(HANDOFF_E_BAD_MAGIC, "stream does not start with QHANDOFF");
  uint16_t version = LoadLe<uint16_t>(data + 8);
  if (version != kStreamVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "stream format version " + std::to_string(version) +
                      " (this decoder reads 1)");
  uint16_t flags = LoadLe<uint16_t>(data + 10);
  if (flags != 0)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "stream header flags " + std::to_string(flags) +
                      " not understood");
  uint32_t header_len = LoadLe<uint32_t>(data + 12);
  if (header_len < kStreamHeaderFixed + 8 || header_len > kMaxHeaderLength)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "stream header length " + std::to_string(header_len) +
                      " outside 48..65536");
  if (len < header_len) {
    *needed = header_len;
    return Status(HANDOFF_E_TRUNCATED, "stream header incomplete");
  }
  uint64_t check = LoadLe<uint64_t>(data + header_len - 8);
  if (check != Checksum64(data, header_len - 8))
    return Status(HANDOFF_E_HEADER_CORRUPT, "stream header checksum mismatch");

  ByteReader r(data + 16, header_len - 16 - 8);
  std::memcpy(out->base_id, r.GetBytes(16), 16);
  uint32_t chunk_size = r.Get<uint32_t>();
  if (chunk_size != kChunkSize)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "chunk size " + std::to_string(chunk_size) +
                      " (format v1 requires 4096)");
  uint32_t count = r.Get<uint32_t>();
  if (count == 0 || count > HANDOFF_MAX_REGIONS)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "region count " + std::to_string(count) + " outside 1..64");
  std::vector<Region> regions;
  for (uint32_t i = 0; i < count; i++) {
    Region region;
    uint8_t kind = r.Get<uint8_t>();
    uint8_t name_len = r.Get<uint8_t>();
    const uint8_t* name = r.GetBytes(name_len);
    region.size = r.Get<uint64_t>();
    if (r.overrun())
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
  if (r.remaining() != 0)
    return Status(HANDOFF_E_BAD_GEOMETRY,
                  "stream header has bytes after the region table");
  out->geometry = Geometry(std::move(regions));
  HANDOFF_RETURN_IF_ERROR(out->geometry.Validate());
  *consumed = header_len;
  return Status::Ok();
}

void SerializeFrameHeader(const FrameHeader& h, uint8_t out[kFrameHeaderSize]) {
  StoreLe<uint32_t>(out, kFrameTag);
  out[4] = h.codec;
  out[5] = static_cast<uint8_t>(h.level);
  StoreLe<uint16_t>(out + 6, h.flags);
  StoreLe<uint32_t>(out + 8, h.payload_length);
  StoreLe<uint32_t>(out + 12, h.plain_length);
  StoreLe<uint64_t>(out + 16, h.frame_seq);
  StoreLe<uint64_t>(out + 24, h.plain_checksum);
  StoreLe<uint32_t>(out + 32, h.record_count);
  StoreLe<uint32_t>(out + 36, static_cast<uint32_t>(Checksum64(out, 36)));
}

Status ParseFrameHeader(const uint8_t* p, FrameHeader* h) {
  uint32_t tag = LoadLe<uint32_t>(p);
  if (tag != kFrameTag)
    return Status(HANDOFF_E_BAD_FRAME_TAG,
                  "expected a frame or end record, found tag 0x" + [&] {
                    char b[9];
                    snprintf(b, sizeof(b), "%08x", tag);
                    return std::string(b);
                  }());
  if (LoadLe<uint32_t>(p + 36) != static_cast<uint32_t>(Checksum64(p, 36)))
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "frame header checksum mismatch");
  h->codec = p[4];
  h->level = static_cast<int8_t>(p[5]);
  h->flags = LoadLe<uint16_t>(p + 6);
  h->payload_length = LoadLe<uint32_t>(p + 8);
  h->plain_length = LoadLe<uint32_t>(p + 12);
  h->frame_seq = LoadLe<uint64_t>(p + 16);
  h->plain_checksum = LoadLe<uint64_t>(p + 24);
  h->record_count = LoadLe<uint32_t>(p + 32);
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
  for (uint64_t c : e.per_type) w.Put<uint64_t>(c);
  w.Put<uint64_t>(e.plain_bytes);
  w.Put<uint64_t>(e.stream_bytes);
  w.PutBytes(e.digest, 16);
  w.Put<uint64_t>(Checksum64(out.data(), out.size()));
  return out;
}

Status ParseEndRecord(const uint8_t* p, EndRecord* e) {
  if (LoadLe<uint64_t>(p + 96) != Checksum64(p, 96))
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "end record checksum mismatch");
  if (LoadLe<uint32_t>(p + 4) != 0)
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT,
                  "end record reserved field not zero");
  ByteReader r(p + 8, 88);
  e->frame_count = r.Get<uint64_t>();
  e->record_count = r.Get<uint64_t>();
  for (uint64_t& c : e->per_type) c = r.Get<uint64_t>();
  e->plain_bytes = r.Get<uint64_t>();
  e->stream_bytes = r.Get<uint64_t>();
  std::memcpy(e->digest, r.GetBytes(16), 16);
  return Status::Ok();
}

}  // namespace handoff
