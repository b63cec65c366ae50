// SPDX-License-Identifier: GPL-2.0-or-later
#include "chunk_index.h"

#include <algorithm>

#include "byte_io.h"
#include "codec.h"

namespace handoff {
namespace {

// zstd level of the index: extents are few next to the data.
constexpr int kIndexLevel = 3;

Status Bad(const std::string& what) {
  return Status(HANDOFF_E_BAD_SEGMENT, "chunk index: " + what);
}

bool Before(const IndexExtent& e, uint32_t region, uint64_t chunk) {
  return e.region < region || (e.region == region && e.first + e.count <= chunk);
}

// Extent @e, read after @prev (null for the first), within the bounds.
Status CheckExtent(const IndexExtent& e, const IndexExtent* prev,
                   const Geometry& g, uint32_t segments) {
  if (e.region >= g.region_count() || e.count == 0 ||
      e.first >= g.regions()[e.region].chunks() ||
      e.count > g.regions()[e.region].chunks() - e.first)
    return Bad("extent of " + std::to_string(e.count) + " chunks from " +
               std::to_string(e.first) + " of region " +
               std::to_string(e.region) + " outside the geometry");
  if (prev != nullptr && !Before(*prev, e.region, e.first))
    return Bad("extents not sorted and disjoint at chunk " +
               std::to_string(e.first) + " of region " + std::to_string(e.region));
  const bool remote = e.place == HANDOFF_CHUNK_REMOTE;
  if ((!remote && e.place != HANDOFF_CHUNK_LOCAL) ||
      (remote ? e.segment >= segments : e.segment != 0))
    return Bad("extent at chunk " + std::to_string(e.first) + " of region " +
               std::to_string(e.region) + " names place " +
               std::to_string(e.place) + ", segment " + std::to_string(e.segment));
  return Status::Ok();
}

}  // namespace

void AddToIndex(const IndexExtent& extent, std::vector<IndexExtent>* index) {
  if (!index->empty()) {
    IndexExtent& last = index->back();
    if (last.region == extent.region && last.place == extent.place &&
        last.segment == extent.segment &&
        last.first + last.count == extent.first) {
      last.count += extent.count;
      return;
    }
  }
  index->push_back(extent);
}

Status SerializeIndex(const std::vector<IndexExtent>& index, std::string* out) {
  if (index.size() > kMaxIndexExtents)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  std::to_string(index.size()) + " index extents (at most " +
                      std::to_string(kMaxIndexExtents) + ")");
  out->clear();
  if (index.empty()) return Status::Ok();  // no bytes at all
  std::string raw;
  ByteWriter w(&raw);
  for (const IndexExtent& e : index) {
    w.Put<uint8_t>(e.region);
    w.Put<uint8_t>(e.place);
    w.Put<uint16_t>(0);
    w.Put<uint32_t>(e.segment);
    w.Put<uint64_t>(e.first);
    w.Put<uint64_t>(e.count);
  }
  Compressor compressor;
  const uint8_t* packed = nullptr;
  size_t packed_len = 0;
  HANDOFF_RETURN_IF_ERROR(compressor.Compress(
      HANDOFF_CODEC_ZSTD, kIndexLevel, reinterpret_cast<const uint8_t*>(raw.data()),
      raw.size(), nullptr, 0, &packed, &packed_len));
  if (packed_len > kMaxIndexBytes)
    return Status(HANDOFF_E_LENGTH_LIMIT, "chunk index above 64 MiB compressed");
  out->assign(reinterpret_cast<const char*>(packed), packed_len);
  return Status::Ok();
}

Status ParseIndex(const uint8_t* p, size_t len, uint32_t count,
                  const Geometry& geometry, uint32_t segments,
                  std::vector<IndexExtent>* index, uint64_t* chunks) {
  index->clear();
  *chunks = 0;
  if (count == 0)
    return len == 0 ? Status::Ok() : Bad("bytes without extents");
  // Extents are disjoint and not empty, so there are no more than the
  // geometry's chunks. The plaintext is exactly count extents, which
  // bounds decompression: without this, a table part of a few KiB (zstd
  // of zeros) naming 2^24 extents made the parser allocate ~770 MiB.
  if (count > geometry.total_chunks())
    return Bad("more extents than the geometry has chunks");
  std::vector<uint8_t> raw(size_t{count} * kIndexExtentSize);
  Decompressor decompressor;
  Status s = decompressor.Decompress(HANDOFF_CODEC_ZSTD, p, len, nullptr, 0,
                                     raw.data(), raw.size());
  if (!s.ok()) return Bad(s.message());
  ByteReader r(raw.data(), raw.size());
  index->reserve(count);
  for (uint32_t i = 0; i < count; i++) {
    IndexExtent e;
    e.region = r.Get<uint8_t>();
    e.place = r.Get<uint8_t>();
    if (r.Get<uint16_t>() != 0) return Bad("reserved field not zero");
    e.segment = r.Get<uint32_t>();
    e.first = r.Get<uint64_t>();
    e.count = r.Get<uint64_t>();
    HANDOFF_RETURN_IF_ERROR(CheckExtent(
        e, index->empty() ? nullptr : &index->back(), geometry, segments));
    index->push_back(e);
    *chunks += e.count;
  }
  return Status::Ok();
}

const IndexExtent* LocateChunk(const std::vector<IndexExtent>& index,
                               uint32_t region, uint64_t chunk) {
  auto it = std::partition_point(
      index.begin(), index.end(),
      [&](const IndexExtent& e) { return Before(e, region, chunk); });
  if (it == index.end() || it->region != region || it->first > chunk)
    return nullptr;
  return &*it;
}

}  // namespace handoff
