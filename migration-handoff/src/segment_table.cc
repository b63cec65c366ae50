// SPDX-License-Identifier: GPL-2.0-or-later
#include "segment_table.h"

#include <cstring>

#include "byte_io.h"
#include "hex.h"

namespace handoff {
namespace {

Status Bad(const std::string& what) {
  return Status(HANDOFF_E_BAD_SEGMENT, what);
}

struct TableCounts {
  uint32_t segments = 0;
  uint32_t deps = 0;
  uint32_t local_frames = 0;
  uint64_t local_bytes = 0;
  uint64_t segment_bytes = 0;
  uint32_t index_extents = 0;
  uint32_t index_bytes = 0;
};

// The fixed fields after the stream header, bounded before any is used
// as a size.
Status ReadCounts(const uint8_t* p, TableCounts* c) {
  ByteReader r(p, kTableFixedSize);
  if (r.Get<uint32_t>() != kTableTag)
    return Bad("no segment table (tag QTAB) after the stream header");
  c->segments = r.Get<uint32_t>();
  c->deps = r.Get<uint32_t>();
  c->local_frames = r.Get<uint32_t>();
  c->local_bytes = r.Get<uint64_t>();
  c->segment_bytes = r.Get<uint64_t>();
  c->index_extents = r.Get<uint32_t>();
  c->index_bytes = r.Get<uint32_t>();
  if (c->index_extents > kMaxIndexExtents || c->index_bytes > kMaxIndexBytes)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "chunk index of " + std::to_string(c->index_extents) +
                      " extents in " + std::to_string(c->index_bytes) +
                      " bytes (at most " + std::to_string(kMaxIndexExtents) +
                      " in " + std::to_string(kMaxIndexBytes) + ")");
  if (c->segments > kMaxSegments || c->deps > kMaxDependencies ||
      c->local_bytes > kMaxLocalBytes)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  "segment table declares " + std::to_string(c->segments) +
                      " segments, " + std::to_string(c->deps) +
                      " dependencies and " + std::to_string(c->local_bytes) +
                      " bytes of local records (at most " +
                      std::to_string(kMaxSegments) + ", " +
                      std::to_string(kMaxDependencies) + ", " +
                      std::to_string(kMaxLocalBytes) + ")");
  if (c->local_frames > c->local_bytes / kFrameHeaderSize)
    return Bad(std::to_string(c->local_frames) + " local frames cannot fit " +
               std::to_string(c->local_bytes) + " bytes");
  return Status::Ok();
}

// Entry @k, read from @r: contiguous with the ones before it (@offset),
// a length a segment can have, dependencies on earlier segments only, in
// increasing order (so that the dependency graph has no cycle).
Status ReadEntry(ByteReader* r, uint32_t k, uint64_t offset,
                 const std::vector<uint32_t>& deps, SegmentEntry* e) {
  e->offset = r->Get<uint64_t>();
  e->length = r->Get<uint32_t>();
  e->dep_first = r->Get<uint16_t>();
  e->dep_count = r->Get<uint16_t>();
  std::memcpy(e->sha256.data(), r->GetBytes(kSha256Size), kSha256Size);
  const std::string what = "segment " + std::to_string(k) + ": ";
  if (e->offset != offset)
    return Bad(what + "offset " + std::to_string(e->offset) + ", expected " +
               std::to_string(offset));
  if (e->length < kSegmentHeaderSize + kFrameHeaderSize ||
      e->length > kMaxSegmentBytes)
    return Bad(what + "length " + std::to_string(e->length) + " outside " +
               std::to_string(kSegmentHeaderSize + kFrameHeaderSize) + ".." +
               std::to_string(kMaxSegmentBytes));
  if (uint32_t{e->dep_first} + e->dep_count > deps.size())
    return Bad(what + "dependencies past the dependency array");
  for (uint32_t i = 0; i < e->dep_count; i++) {
    const uint32_t d = deps[e->dep_first + i];
    if (d >= k || (i > 0 && d <= deps[e->dep_first + i - 1]))
      return Bad(what + "dependency " + std::to_string(d) +
                 " not an earlier segment in increasing order");
  }
  return Status::Ok();
}

}  // namespace

Status SerializeSegmentTable(const SegmentTable& t, std::string* table) {
  std::string index;
  HANDOFF_RETURN_IF_ERROR(SerializeIndex(t.index, &index));
  std::string out = SerializeStreamHeader(t.header);
  ByteWriter w(&out);
  uint64_t segment_bytes = 0;
  for (const SegmentEntry& e : t.entries) segment_bytes += e.length;
  w.Put<uint32_t>(kTableTag);
  w.Put<uint32_t>(static_cast<uint32_t>(t.entries.size()));
  w.Put<uint32_t>(static_cast<uint32_t>(t.deps.size()));
  w.Put<uint32_t>(t.local_frames);
  w.Put<uint64_t>(t.local.size());
  w.Put<uint64_t>(segment_bytes);
  w.Put<uint32_t>(static_cast<uint32_t>(t.index.size()));
  w.Put<uint32_t>(static_cast<uint32_t>(index.size()));
  for (const SegmentEntry& e : t.entries) {
    w.Put<uint64_t>(e.offset);
    w.Put<uint32_t>(e.length);
    w.Put<uint16_t>(e.dep_first);
    w.Put<uint16_t>(e.dep_count);
    w.PutBytes(e.sha256.data(), kSha256Size);
  }
  for (uint32_t d : t.deps) w.Put<uint32_t>(d);
  w.PutBytes(index.data(), index.size());
  w.PutBytes(t.local.data(), t.local.size());
  w.Put<uint64_t>(Checksum64(out.data(), out.size()));
  table->swap(out);
  return Status::Ok();
}

Status SegmentTableLength(const uint8_t* p, size_t len, uint64_t* table_len,
                          size_t* needed) {
  if (len == 0) {  // the data of an empty input may be null
    *needed = kStreamHeaderPrefix;
    return Status(HANDOFF_E_TRUNCATED, "empty stream");
  }
  StreamHeader header;
  size_t header_len = 0;
  HANDOFF_RETURN_IF_ERROR(ParseStreamHeader(p, len, &header, &header_len, needed));
  if (header.version != kSegmentedStreamVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "stream version " + std::to_string(header.version) +
                      " has no segment table");
  if (len - header_len < kTableFixedSize) {
    *needed = header_len + kTableFixedSize;
    return Status(HANDOFF_E_TRUNCATED, "segment table incomplete");
  }
  TableCounts c;
  HANDOFF_RETURN_IF_ERROR(ReadCounts(p + header_len, &c));
  *table_len = header_len + kTableFixedSize +
               uint64_t{c.segments} * kSegmentEntrySize +
               uint64_t{c.deps} * 4 + c.index_bytes + c.local_bytes +
               kTableChecksumSize;
  return Status::Ok();
}

Status ParseSegmentTable(const uint8_t* p, size_t len, SegmentTable* out) {
  uint64_t table_len = 0;
  size_t needed = 0, header_len = 0;
  HANDOFF_RETURN_IF_ERROR(SegmentTableLength(p, len, &table_len, &needed));
  if (table_len != len)
    return Status(len < table_len ? HANDOFF_E_TRUNCATED : HANDOFF_E_TRAILING_DATA,
                  "segment table part of " + std::to_string(len) +
                      " bytes declares " + std::to_string(table_len));
  const size_t sum_at = len - kTableChecksumSize;
  if (LoadLe<uint64_t>(p + sum_at) != Checksum64(p, sum_at))
    return Bad("segment table checksum mismatch");
  HANDOFF_RETURN_IF_ERROR(
      ParseStreamHeader(p, len, &out->header, &header_len, &needed));
  TableCounts c;
  HANDOFF_RETURN_IF_ERROR(ReadCounts(p + header_len, &c));
  const size_t entries_at = header_len + kTableFixedSize;
  ByteReader deps(p + entries_at + size_t{c.segments} * kSegmentEntrySize,
                  size_t{c.deps} * 4);
  out->deps.resize(c.deps);
  for (uint32_t& d : out->deps) d = deps.Get<uint32_t>();
  ByteReader r(p + entries_at, size_t{c.segments} * kSegmentEntrySize);
  out->entries.resize(c.segments);
  uint64_t offset = 0;
  for (uint32_t k = 0; k < c.segments; k++) {
    HANDOFF_RETURN_IF_ERROR(ReadEntry(&r, k, offset, out->deps, &out->entries[k]));
    offset += out->entries[k].length;
  }
  if (offset != c.segment_bytes)
    return Bad("segments total " + std::to_string(offset) +
               " bytes, the table says " + std::to_string(c.segment_bytes));
  const uint8_t* index = p + entries_at +
                         size_t{c.segments} * kSegmentEntrySize +
                         size_t{c.deps} * 4;
  HANDOFF_RETURN_IF_ERROR(ParseIndex(index, c.index_bytes, c.index_extents,
                                     out->header.geometry, c.segments,
                                     &out->index, &out->indexed_chunks));
  const uint8_t* local = p + sum_at - c.local_bytes;
  out->local.assign(reinterpret_cast<const char*>(local), c.local_bytes);
  out->local_frames = c.local_frames;
  out->table_len = table_len;
  out->segment_bytes = c.segment_bytes;
  return Status::Ok();
}

Status CheckRoot(const uint8_t* table, size_t len, const uint8_t* root) {
  if (root == nullptr) return Status::Ok();
  Sha256Digest got;
  HANDOFF_RETURN_IF_ERROR(Sha256(table, len, &got));
  if (std::memcmp(got.data(), root, kSha256Size) != 0)
    return Status(HANDOFF_E_ROOT_MISMATCH,
                  "the table part's SHA-256 is " + Hex(got.data(), kSha256Size) +
                      ", the root " + Hex(root, kSha256Size));
  return Status::Ok();
}

void SerializeSegmentHeader(const SegmentHeader& h,
                            uint8_t out[kSegmentHeaderSize]) {
  StoreLe<uint32_t>(out, kSegmentTag);
  StoreLe<uint32_t>(out + 4, h.number);
  StoreLe<uint32_t>(out + 8, h.frame_count);
  StoreLe<uint32_t>(out + 12, h.flags);
}

Status ParseSegmentHeader(const uint8_t* p, size_t len, SegmentHeader* out) {
  if (len < kSegmentHeaderSize || LoadLe<uint32_t>(p) != kSegmentTag)
    return Bad("segment does not start with QSEG");
  out->number = LoadLe<uint32_t>(p + 4);
  out->frame_count = LoadLe<uint32_t>(p + 8);
  out->flags = LoadLe<uint32_t>(p + 12);
  if ((out->flags & ~kSegmentFlagsKnown) != 0 || out->flags == 0)
    return Bad("segment flags " + std::to_string(out->flags) +
               " not understood");
  if (out->frame_count == 0 ||
      out->frame_count > (len - kSegmentHeaderSize) / kFrameHeaderSize)
    return Bad(std::to_string(out->frame_count) + " frames cannot fill a " +
               std::to_string(len) + "-byte segment");
  return Status::Ok();
}

}  // namespace handoff
