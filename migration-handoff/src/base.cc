// SPDX-License-Identifier: GPL-2.0-or-later
#include "base.h"

#include <limits.h>
#include <stdlib.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "byte_io.h"
#include "format.h"

namespace handoff {
namespace {

// Index file layout; see the comment at Base::Serialize.
constexpr char kIndexMagic[8] = {'Q', 'H', 'O', 'F', 'I', 'D', 'X', '1'};
constexpr uint32_t kIndexVersion = 1;
constexpr size_t kIndexAlign = 4096;
static_assert(std::endian::native == std::endian::little,
              "index files hold native little-endian arrays");

Status Corrupt(const std::string& why) {
  return Status(HANDOFF_E_INDEX_CORRUPT, "base index corrupt: " + why);
}

void HashRange(const Geometry& g, const std::vector<const uint8_t*>& data,
               uint64_t begin, uint64_t end, Hash128* out) {
  uint32_t r;
  uint64_t i;
  g.Locate(begin, &r, &i);
  for (uint64_t c = begin; c < end; c++) {
    while (i >= g.regions()[r].chunks()) {
      r++;
      i = 0;
    }
    out[c] = HashChunk(data[r] + (i << kChunkShift));
    i++;
  }
}

}  // namespace

Status Base::Create(const std::vector<RegionSource>& sources,
                    const std::string& index_path, std::unique_ptr<Base>* out) {
  std::unique_ptr<Base> base(new Base());
  std::vector<Region> regions;
  std::vector<std::string> paths;
  std::vector<FileIdentity> files;
  for (const RegionSource& src : sources) {
    Region region = src.region;
    FileIdentity fid;
    std::string abs;
    if (!src.path.empty()) {
      auto file = std::make_unique<MappedFile>();
      HANDOFF_RETURN_IF_ERROR(file->Open(src.path));
      HANDOFF_RETURN_IF_ERROR(StatFile(src.path, &fid));
      if (region.size == 0) region.size = file->size();
      if (region.size > file->size())
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      "region '" + region.name + "' larger than file '" +
                          src.path + "'");
      char resolved[PATH_MAX];
      if (realpath(src.path.c_str(), resolved) == nullptr)
        return Status(HANDOFF_E_IO, "cannot resolve '" + src.path + "'");
      abs = resolved;
      file->AdviseSequential();
      base->region_data_.push_back(file->data());
      base->region_files_.push_back(std::move(file));
    } else {
      if (src.data == nullptr)
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      "region '" + region.name + "' has neither path nor data");
      if (!index_path.empty())
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      "region '" + region.name +
                          "' is in memory: a saved index needs files");
      base->region_data_.push_back(src.data);
    }
    regions.push_back(region);
    paths.push_back(abs);
    files.push_back(fid);
  }
  base->geometry_ = Geometry(std::move(regions));
  HANDOFF_RETURN_IF_ERROR(base->geometry_.Validate());

  std::string image;
  HANDOFF_RETURN_IF_ERROR(base->Serialize(paths, files, &image));
  if (!index_path.empty())
    HANDOFF_RETURN_IF_ERROR(WriteFileAtomically(index_path, image));
  base->owned_.resize((image.size() + 7) / 8);
  std::memcpy(base->owned_.data(), image.data(), image.size());
  const uint8_t* p = reinterpret_cast<const uint8_t*>(base->owned_.data());
  // The regions are already mapped: attach the image without reopening.
  std::vector<const uint8_t*> data = base->region_data_;
  HANDOFF_RETURN_IF_ERROR(base->AttachIndex(p, image.size(), false));
  base->region_data_ = data;
  *out = std::move(base);
  return Status::Ok();
}

// Index file: header (magic "QHOFIDX1", u32 version, u32 header length,
// u64 chunks, u64 table slots, u64 distinct, 16-byte content ID, u64 hash
// array offset, u64 table offset, u32 region count, regions {u8 kind, u8
// name length, name, u64 size, u16 path length, path, u64 file size, i64
// file mtime ns}, u64 XXH3-64 of the header), then at 4 KiB alignment the
// XXH3-128 of every chunk (lo, hi) in global order, then the table.
Status Base::Serialize(const std::vector<std::string>& paths,
                       const std::vector<FileIdentity>& files,
                       std::string* out) {
  const uint64_t total = geometry_.total_chunks();
  std::vector<Hash128> hashes(total);
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  if (total < 4096) workers = 1;
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < workers; w++) {
    uint64_t b = total * w / workers, e = total * (w + 1) / workers;
    threads.emplace_back(HashRange, std::cref(geometry_),
                         std::cref(region_data_), b, e, hashes.data());
  }
  for (auto& t : threads) t.join();

  uint64_t slots = 16;
  while (slots < total * 2) slots *= 2;
  std::vector<uint64_t> table(slots, 0);
  uint64_t distinct = 0;
  for (uint64_t c = 0; c < total; c++) {
    const Hash128& h = hashes[c];
    uint64_t slot = h.lo & (slots - 1);
    bool seen = false;
    for (; table[slot] != 0; slot = (slot + 1) & (slots - 1)) {
      if (hashes[table[slot] - 1] == h) {
        seen = true;
        break;
      }
    }
    if (seen) continue;
    uint32_t r;
    uint64_t i;
    geometry_.Locate(c, &r, &i);
    if (IsZeroChunk(Chunk(r, i))) continue;
    table[slot] = c + 1;
    distinct++;
  }

  XXH3_state_t* st = XXH3_createState();
  if (st == nullptr) return Status(HANDOFF_E_NO_MEMORY, "XXH3_createState");
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, "QHOFBASE", 8);
  for (const Region& r : geometry_.regions()) {
    uint8_t b[10];
    b[0] = static_cast<uint8_t>(r.kind);
    b[1] = static_cast<uint8_t>(r.name.size());
    XXH3_128bits_update(st, b, 2);
    XXH3_128bits_update(st, r.name.data(), r.name.size());
    StoreLe<uint64_t>(b, r.size);
    XXH3_128bits_update(st, b, 8);
  }
  XXH3_128bits_update(st, hashes.data(), hashes.size() * sizeof(Hash128));
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
  XXH3_freeState(st);
  std::memcpy(id_, canon.digest, 16);

  std::string& o = *out;
  o.clear();
  ByteWriter w(&o);
  w.PutBytes(kIndexMagic, 8);
  w.Put<uint32_t>(kIndexVersion);
  w.Put<uint32_t>(0);  // header length, patched
  w.Put<uint64_t>(total);
  w.Put<uint64_t>(slots);
  w.Put<uint64_t>(distinct);
  w.PutBytes(id_, 16);
  w.Put<uint64_t>(0);  // hash offset, patched
  w.Put<uint64_t>(0);  // table offset, patched
  w.Put<uint32_t>(static_cast<uint32_t>(geometry_.region_count()));
  for (size_t i = 0; i < geometry_.region_count(); i++) {
    const Region& r = geometry_.regions()[i];
    w.Put<uint8_t>(static_cast<uint8_t>(r.kind));
    w.Put<uint8_t>(static_cast<uint8_t>(r.name.size()));
    w.PutBytes(r.name.data(), r.name.size());
    w.Put<uint64_t>(r.size);
    w.Put<uint16_t>(static_cast<uint16_t>(paths[i].size()));
    w.PutBytes(paths[i].data(), paths[i].size());
    w.Put<uint64_t>(files[i].size);
    w.Put<int64_t>(files[i].mtime_ns);
  }
  uint8_t* hp = reinterpret_cast<uint8_t*>(o.data());
  StoreLe<uint32_t>(hp + 12, static_cast<uint32_t>(o.size() + 8));
  uint64_t hash_off = (o.size() + 8 + kIndexAlign - 1) / kIndexAlign * kIndexAlign;
  uint64_t table_off = hash_off + total * sizeof(Hash128);
  StoreLe<uint64_t>(hp + 56, hash_off);
  StoreLe<uint64_t>(hp + 64, table_off);
  w.Put<uint64_t>(Checksum64(o.data(), o.size()));
  o.resize(hash_off, '\0');
  w.PutBytes(hashes.data(), hashes.size() * sizeof(Hash128));
  w.PutBytes(table.data(), table.size() * sizeof(uint64_t));
  return Status::Ok();
}

Status Base::AttachIndex(const uint8_t* p, size_t size, bool check_files) {
  if (size < 80 || std::memcmp(p, kIndexMagic, 8) != 0)
    return Corrupt("not a handoff base index");
  if (LoadLe<uint32_t>(p + 8) != kIndexVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "base index version " +
                      std::to_string(LoadLe<uint32_t>(p + 8)));
  uint32_t header_len = LoadLe<uint32_t>(p + 12);
  if (header_len < 84 || header_len > size)
    return Corrupt("header length out of range");
  if (LoadLe<uint64_t>(p + header_len - 8) != Checksum64(p, header_len - 8))
    return Corrupt("header checksum mismatch");
  ByteReader r(p + 16, header_len - 16 - 8);
  uint64_t total = r.Get<uint64_t>();
  uint64_t slots = r.Get<uint64_t>();
  distinct_ = r.Get<uint64_t>();
  std::memcpy(id_, r.GetBytes(16), 16);
  uint64_t hash_off = r.Get<uint64_t>();
  uint64_t table_off = r.Get<uint64_t>();
  uint32_t count = r.Get<uint32_t>();
  if (count == 0 || count > HANDOFF_MAX_REGIONS)
    return Corrupt("region count out of range");
  std::vector<Region> regions;
  for (uint32_t i = 0; i < count; i++) {
    Region region;
    uint8_t kind = r.Get<uint8_t>();
    if (kind > HANDOFF_REGION_DISK) return Corrupt("unknown region kind");
    region.kind = static_cast<HandoffRegionKind>(kind);
    uint8_t name_len = r.Get<uint8_t>();
    const uint8_t* name = r.GetBytes(name_len);
    region.size = r.Get<uint64_t>();
    uint16_t path_len = r.Get<uint16_t>();
    const uint8_t* path = r.GetBytes(path_len);
    FileIdentity recorded;
    recorded.size = r.Get<uint64_t>();
    recorded.mtime_ns = r.Get<int64_t>();
    if (r.overrun()) return Corrupt("region table overruns header");
    region.name.assign(reinterpret_cast<const char*>(name), name_len);
    if (check_files) {
      std::string file_path(reinterpret_cast<const char*>(path), path_len);
      if (file_path.empty())
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      "region '" + region.name + "' has no file");
      FileIdentity now;
      HANDOFF_RETURN_IF_ERROR(StatFile(file_path, &now));
      if (now.size != recorded.size || now.mtime_ns != recorded.mtime_ns)
        return Status(HANDOFF_E_BASE_CHANGED,
                      "base file '" + file_path +
                          "' changed since the index was built");
      auto file = std::make_unique<MappedFile>();
      HANDOFF_RETURN_IF_ERROR(file->Open(file_path));
      if (file->size() < region.size)
        return Status(HANDOFF_E_BASE_CHANGED,
                      "base file '" + file_path + "' shorter than its region");
      region_data_.push_back(file->data());
      region_files_.push_back(std::move(file));
    }
    regions.push_back(std::move(region));
  }
  geometry_ = Geometry(std::move(regions));
  HANDOFF_RETURN_IF_ERROR(geometry_.Validate());
  if (total != geometry_.total_chunks()) return Corrupt("chunk count mismatch");
  if (slots == 0 || (slots & (slots - 1)) != 0 || slots < total)
    return Corrupt("table size invalid");
  if (hash_off % 16 != 0 || hash_off < header_len || hash_off > size ||
      (size - hash_off) / sizeof(Hash128) < total)
    return Corrupt("hash array outside the file");
  if (table_off % 8 != 0 || table_off < hash_off + total * sizeof(Hash128) ||
      table_off > size || (size - table_off) / 8 < slots)
    return Corrupt("table outside the file");
  hashes_ = reinterpret_cast<const Hash128*>(p + hash_off);
  table_ = reinterpret_cast<const uint64_t*>(p + table_off);
  mask_ = slots - 1;
  return Status::Ok();
}

Status Base::Open(const std::string& index_path, std::unique_ptr<Base>* out) {
  std::unique_ptr<Base> base(new Base());
  HANDOFF_RETURN_IF_ERROR(base->index_file_.Open(index_path));
  HANDOFF_RETURN_IF_ERROR(base->AttachIndex(
      base->index_file_.data(), base->index_file_.size(), true));
  *out = std::move(base);
  return Status::Ok();
}

bool Base::Find(const Hash128& h, const uint8_t* data, uint64_t* global) const {
  const uint64_t total = geometry_.total_chunks();
  for (uint64_t slot = h.lo & mask_, probes = 0; probes <= mask_;
       slot = (slot + 1) & mask_, probes++) {
    uint64_t v = table_[slot];
    if (v == 0) return false;
    uint64_t g = v - 1;
    // A corrupt table entry only costs a miss: every hit is byte-checked.
    if (g >= total) continue;
    if (hashes_[g] == h) {
      if (std::memcmp(ChunkGlobal(g), data, kChunkSize) != 0) return false;
      *global = g;
      return true;
    }
  }
  return false;
}

}  // namespace handoff
