// SPDX-License-Identifier: GPL-2.0-or-later
#include "index_mutator.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "base_index.h"
#include "byte_io.h"
#include "format.h"
#include "fuzz_target.h"
#include "index_dir.h"

namespace handoff_fuzz {
namespace {

using handoff::Hash128;
using handoff::IndexedFile;
using handoff::Region;

constexpr uint64_t kChunk = HANDOFF_CHUNK_SIZE;
// Geometries the mutator hashes or pads stay this small; larger claims
// are still written, with the hashes they already had.
constexpr uint64_t kMaxMutatorChunks = 1 << 16;
// A header larger than this is not searched for its checksum.
constexpr size_t kMaxHeaderScan = 64 * 1024;

// Where the header checksum is, found as the format defines it: the
// first 8 bytes that are the XXH3-64 of all the bytes before them.
// Reading the header length field instead would spell its offset here.
size_t FindHeaderChecksum(const uint8_t* p, size_t size) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  size_t found = SIZE_MAX;
  for (size_t k = 0; k + 8 <= size && k <= kMaxHeaderScan; k++) {
    if (handoff::LoadLe<uint64_t>(p + k) == XXH3_64bits_digest(st) &&
        handoff::LoadLe<uint64_t>(p + k) == handoff::Checksum64(p, k)) {
      found = k;
      break;
    }
    XXH3_64bits_update(st, p + k, 1);
  }
  XXH3_freeState(st);
  return found;
}

// The base ID of docs/stream-format.md ("Base ID"), which an index must
// carry for its geometry and hashes.
void ContentIdOf(const std::vector<Region>& regions,
                 const std::vector<Hash128>& hashes, uint8_t id[16]) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, "QHOFBASE", 8);
  for (const Region& r : regions) {
    const uint8_t head[2] = {static_cast<uint8_t>(r.kind),
                             static_cast<uint8_t>(r.name.size())};
    uint8_t size[8];
    handoff::StoreLe<uint64_t>(size, r.size);
    XXH3_128bits_update(st, head, 2);
    XXH3_128bits_update(st, r.name.data(), r.name.size());
    XXH3_128bits_update(st, size, 8);
  }
  XXH3_128bits_update(st, hashes.data(), hashes.size() * sizeof(Hash128));
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
  XXH3_freeState(st);
  std::memcpy(id, canon.digest, 16);
}

const IndexDirFile* FindFile(const std::string& name) {
  for (const IndexDirFile& f : GetIndexDir().files)
    if (f.name == name) return &f;
  return nullptr;
}

// Mostly a regular file of the directory, sometimes one to refuse.
std::string AnyFileName(Rng* rng) {
  const IndexDir& d = GetIndexDir();
  if (rng->OneIn(4)) return d.refused[rng->Below(d.refused.size())];
  return d.files[rng->Below(d.files.size())].name;
}

// The region size that fits file @name: its whole chunks (one at least).
uint64_t FittingSize(const std::string& name) {
  const IndexDirFile* f = FindFile(name);
  const uint64_t chunks = f ? f->data.size() / kChunk : 1;
  return std::max<uint64_t>(chunks, 1) * kChunk;
}

std::string AnyRegionName(const std::vector<Region>& regions, Rng* rng) {
  switch (rng->Below(5)) {
    case 0: return regions[rng->Below(regions.size())].name;  // duplicate
    case 1: return "";
    case 2: return std::string(HANDOFF_MAX_REGION_NAME + rng->Below(2), 'n');
    case 3: return std::string("r\0x", 3);
    default: return "r" + std::to_string(rng->Below(100));
  }
}

// Hashes of every chunk of the regions whose file is one of the
// directory's and holds the region; others keep what they had.
void Rehash(const std::vector<Region>& regions,
            const std::vector<IndexedFile>& files, std::vector<Hash128>* hashes) {
  uint64_t first = 0;
  for (size_t r = 0; r < regions.size(); r++) {
    const uint64_t chunks = regions[r].chunks();
    const IndexDirFile* f = FindFile(files[r].name);
    if (f != nullptr && regions[r].size <= f->data.size())
      for (uint64_t i = 0; i < chunks && first + i < hashes->size(); i++)
        (*hashes)[first + i] = handoff::HashChunk(&f->data[i * kChunk]);
    first += chunks;
  }
}

// One change to the regions, their files or the hashes.
void MutateContents(std::vector<Region>* regions, std::vector<IndexedFile>* files,
                    std::vector<Hash128>* hashes, Rng* rng) {
  const size_t r = rng->Below(regions->size());
  Region& region = (*regions)[r];
  IndexedFile& file = (*files)[r];
  switch (rng->Below(10)) {
    case 0:
      file.name = AnyFileName(rng);
      if (rng->OneIn(2)) break;
      [[fallthrough]];
    case 1:  // the size the directory's file has, so that the open goes on
      if (const IndexDirFile* f = FindFile(file.name)) {
        file.size = f->data.size();
        region.size = std::min<uint64_t>(region.size, FittingSize(file.name));
      } else {
        file.size = InterestingValue(rng, file.size);
      }
      break;
    case 2:
      region.size = rng->OneIn(2) ? kChunk * (1 + rng->Below(20))
                                  : InterestingValue(rng, region.size);
      break;
    case 3:  // (other kind bytes come from header mutations: the enum
             // cannot hold them)
      region.kind = region.kind == HANDOFF_REGION_DISK ? HANDOFF_REGION_MEMORY
                                                       : HANDOFF_REGION_DISK;
      break;
    case 4:
      region.name = AnyRegionName(*regions, rng);
      break;
    case 5: {  // another region on a file of the directory
      if (regions->size() > HANDOFF_MAX_REGIONS) break;
      Region extra;
      extra.name = "extra" + std::to_string(regions->size());
      extra.kind = static_cast<HandoffRegionKind>(rng->Below(2));
      IndexedFile ef;
      ef.name = AnyFileName(rng);
      ef.size = FindFile(ef.name) ? FindFile(ef.name)->data.size() : kChunk;
      extra.size = FittingSize(ef.name);
      const size_t at = rng->Below(regions->size() + 1);
      regions->insert(regions->begin() + at, extra);
      files->insert(files->begin() + at, ef);
      break;
    }
    case 6:
      if (regions->size() > 1) {
        regions->erase(regions->begin() + r);
        files->erase(files->begin() + r);
      }
      break;
    case 7: {
      const size_t o = rng->Below(regions->size());
      std::swap((*regions)[r], (*regions)[o]);
      std::swap((*files)[r], (*files)[o]);
      break;
    }
    case 8:
      if (!hashes->empty()) {
        Hash128& h = (*hashes)[rng->Below(hashes->size())];
        (rng->OneIn(2) ? h.lo : h.hi) ^= 1ull << rng->Below(64);
      }
      break;
    default:
      hashes->resize(rng->Below(hashes->size() + 1));
      break;
  }
}

// Rebuilds the index with the engine's writer after a few changes.
std::string Rebuild(const handoff::BaseIndex& idx, Rng* rng) {
  std::vector<Region> regions = idx.geometry.regions();
  std::vector<IndexedFile> files = idx.files;
  std::vector<Hash128> hashes(idx.hashes, idx.hashes + idx.geometry.total_chunks());
  for (uint64_t k = 1 + rng->Below(3); k > 0; k--)
    MutateContents(&regions, &files, &hashes, rng);
  const handoff::Geometry geometry(regions);
  const uint64_t total = geometry.total_chunks();
  if (total <= kMaxMutatorChunks && !rng->OneIn(8)) {
    hashes.resize(total);
    if (!rng->OneIn(4)) Rehash(regions, files, &hashes);
  }
  uint8_t id[16];
  std::memcpy(id, idx.content_id, 16);
  if (!rng->OneIn(8)) ContentIdOf(regions, hashes, id);
  static const Hash128 zero = [] {
    static const uint8_t chunk[kChunk] = {};
    return handoff::HashChunk(chunk);
  }();
  return handoff::BuildBaseIndex(
      geometry, files, id, hashes, [&hashes](uint64_t c) {
        return c >= hashes.size() || hashes[c] == zero;
      });
}

// Overwrites a field-sized run of the header and seals it again.
bool MutateHeader(uint8_t* data, size_t size, Rng* rng) {
  const size_t sum_at = FindHeaderChecksum(data, size);
  if (sum_at == SIZE_MAX || sum_at < 8) return false;
  for (uint64_t k = 1 + rng->Below(2); k > 0; k--) {
    const size_t width = size_t{1} << rng->Below(4);
    const size_t at = rng->Below(sum_at - width + 1);
    if (rng->OneIn(4)) {
      data[at] ^= static_cast<uint8_t>(1u << rng->Below(8));
      continue;
    }
    uint64_t old = 0;
    std::memcpy(&old, data + at, width);
    const uint64_t v = InterestingValue(rng, old);
    std::memcpy(data + at, &v, width);  // little-endian host (base_index.cc)
  }
  handoff::StoreLe<uint64_t>(data + sum_at, handoff::Checksum64(data, sum_at));
  return true;
}

// Overwrites table slots or hashes where the parse found them.
void MutateArrays(const handoff::BaseIndex& idx, Rng* rng) {
  const uint64_t total = idx.geometry.total_chunks();
  if (rng->OneIn(2) || total == 0) {
    // The parse found the arrays inside @data, which is ours to change.
    uint8_t* table = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(idx.table));
    for (uint64_t k = 1 + rng->Below(4); k > 0; k--) {
      const uint64_t slot = rng->Below(idx.slots);
      const uint64_t v = rng->OneIn(2) ? rng->Below(total + 2)
                                       : InterestingValue(rng, slot);
      handoff::StoreLe<uint64_t>(table + slot * 8, v);
    }
  } else {
    uint8_t* hashes = const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(idx.hashes));
    hashes[rng->Below(total * sizeof(Hash128))] ^=
        static_cast<uint8_t>(1u << rng->Below(8));
  }
}

}  // namespace

size_t MutateIndexInput(uint8_t* data, size_t size, size_t max_size,
                        unsigned int seed) {
  Rng rng(seed);
  handoff::BaseIndex idx;
  if (rng.OneIn(4) || !handoff::ParseBaseIndex(data, size, &idx).ok())
    return LLVMFuzzerMutate(data, size, max_size);
  switch (rng.Below(4)) {
    case 0:
      if (MutateHeader(data, size, &rng)) return size;
      break;
    case 1:
      MutateArrays(idx, &rng);
      return size;
    default: {
      const std::string image = Rebuild(idx, &rng);
      if (image.size() > max_size) break;
      std::memcpy(data, image.data(), image.size());
      return image.size();
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

}  // namespace handoff_fuzz
