// SPDX-License-Identifier: GPL-2.0-or-later
#include "base_index.h"

#include <bit>
#include <cstring>

#include "byte_io.h"
#include "format.h"

namespace handoff {
namespace {

// Every offset into the header is named here and used nowhere else.
constexpr char kIndexMagic[8] = {'Q', 'H', 'O', 'F', 'I', 'D', 'X', '1'};
constexpr uint32_t kIndexVersion = 2;
constexpr uint32_t kIndexVersionAbsolutePaths = 1;
constexpr size_t kHdrMagic = 0;         // 8 bytes
constexpr size_t kHdrVersion = 8;       // u32
constexpr size_t kHdrLength = 12;       // u32, checksum included
constexpr size_t kHdrChunks = 16;       // u64
constexpr size_t kHdrSlots = 24;        // u64
constexpr size_t kHdrDistinct = 32;     // u64
constexpr size_t kHdrContentId = 40;    // 16 bytes
constexpr size_t kHdrHashOffset = 56;   // u64
constexpr size_t kHdrTableOffset = 64;  // u64
constexpr size_t kHdrRegionCount = 72;  // u32
constexpr size_t kHdrRegions = 76;      // region records, then the checksum
constexpr size_t kHdrChecksumSize = 8;  // u64 XXH3-64 of the bytes before
constexpr size_t kIndexAlign = 4096;    // of the hash array, when written
constexpr uint64_t kMinSlots = 16;
// A recorded file name is a relative path of at most kMaxFileName bytes,
// each component at most kMaxFileComponent (Linux's PATH_MAX and NAME_MAX
// less the terminator).
constexpr size_t kMaxFileName = 4095;
constexpr size_t kMaxFileComponent = 255;
static_assert(std::endian::native == std::endian::little,
              "index files hold native little-endian arrays");

Status Corrupt(const std::string& why) {
  return Status(HANDOFF_E_INDEX_CORRUPT, "base index corrupt: " + why);
}

// Open addressing with linear probing, at most half full: one slot per
// distinct content not skipped.
std::vector<uint64_t> BuildTable(const std::vector<Hash128>& hashes,
                                 const std::function<bool(uint64_t)>& skip,
                                 uint64_t* distinct) {
  const uint64_t total = hashes.size();
  uint64_t slots = kMinSlots;
  while (slots < total * 2) slots *= 2;
  std::vector<uint64_t> table(slots, 0);
  *distinct = 0;
  for (uint64_t c = 0; c < total; c++) {
    const Hash128& h = hashes[c];
    uint64_t slot = FirstProbe(h, slots);
    bool seen = false;
    for (; table[slot] != 0; slot = (slot + 1) & (slots - 1)) {
      if (hashes[table[slot] - 1] == h) {
        seen = true;
        break;
      }
    }
    if (seen || skip(c)) continue;
    table[slot] = c + 1;
    ++*distinct;
  }
  return table;
}

void PutRegionRecords(const Geometry& g, const std::vector<IndexedFile>& files,
                      std::string* out) {
  ByteWriter w(out);
  for (size_t i = 0; i < g.region_count(); i++) {
    const Region& r = g.regions()[i];
    w.Put<uint8_t>(static_cast<uint8_t>(r.kind));
    w.Put<uint8_t>(static_cast<uint8_t>(r.name.size()));
    w.PutBytes(r.name.data(), r.name.size());
    w.Put<uint64_t>(r.size);
    w.Put<uint16_t>(static_cast<uint16_t>(files[i].name.size()));
    w.PutBytes(files[i].name.data(), files[i].name.size());
    w.Put<uint64_t>(files[i].size);
  }
}

// Reads @count region records from @r into @out's geometry and files.
Status ReadRegionRecords(ByteReader* r, uint32_t count, BaseIndex* out) {
  std::vector<Region> regions;
  out->files.clear();
  for (uint32_t i = 0; i < count; i++) {
    Region region;
    IndexedFile file;
    const uint8_t kind = r->Get<uint8_t>();
    if (kind > HANDOFF_REGION_DISK) return Corrupt("unknown region kind");
    region.kind = static_cast<HandoffRegionKind>(kind);
    const uint8_t name_len = r->Get<uint8_t>();
    const uint8_t* name = r->GetBytes(name_len);
    region.size = r->Get<uint64_t>();
    const uint16_t file_len = r->Get<uint16_t>();
    const uint8_t* file_name = r->GetBytes(file_len);
    file.size = r->Get<uint64_t>();
    if (r->overrun()) return Corrupt("region table overruns the header");
    region.name.assign(reinterpret_cast<const char*>(name), name_len);
    file.name.assign(reinterpret_cast<const char*>(file_name), file_len);
    if (!file.name.empty() && region.size > file.size)
      return Corrupt("region '" + region.name + "' larger than its file");
    regions.push_back(std::move(region));
    out->files.push_back(std::move(file));
  }
  if (r->remaining() != 0) return Corrupt("bytes after the region table");
  out->geometry = Geometry(std::move(regions));
  return out->geometry.Validate();
}

}  // namespace

std::string BuildBaseIndex(const Geometry& g,
                           const std::vector<IndexedFile>& files,
                           const uint8_t content_id[16],
                           const std::vector<Hash128>& hashes,
                           const std::function<bool(uint64_t)>& skip) {
  uint64_t distinct = 0;
  const std::vector<uint64_t> table = BuildTable(hashes, skip, &distinct);
  const uint64_t total = g.total_chunks();
  std::string o(kHdrRegions, '\0');
  PutRegionRecords(g, files, &o);
  const uint64_t header_len = o.size() + kHdrChecksumSize;
  const uint64_t hash_off = (header_len + kIndexAlign - 1) / kIndexAlign * kIndexAlign;
  const uint64_t table_off = hash_off + total * sizeof(Hash128);
  uint8_t* hp = reinterpret_cast<uint8_t*>(o.data());
  std::memcpy(hp + kHdrMagic, kIndexMagic, sizeof(kIndexMagic));
  StoreLe<uint32_t>(hp + kHdrVersion, kIndexVersion);
  StoreLe<uint32_t>(hp + kHdrLength, static_cast<uint32_t>(header_len));
  StoreLe<uint64_t>(hp + kHdrChunks, total);
  StoreLe<uint64_t>(hp + kHdrSlots, table.size());
  StoreLe<uint64_t>(hp + kHdrDistinct, distinct);
  std::memcpy(hp + kHdrContentId, content_id, 16);
  StoreLe<uint64_t>(hp + kHdrHashOffset, hash_off);
  StoreLe<uint64_t>(hp + kHdrTableOffset, table_off);
  StoreLe<uint32_t>(hp + kHdrRegionCount,
                    static_cast<uint32_t>(g.region_count()));
  ByteWriter w(&o);
  w.Put<uint64_t>(Checksum64(o.data(), o.size()));
  o.resize(hash_off, '\0');
  w.PutBytes(hashes.data(), hashes.size() * sizeof(Hash128));
  w.PutBytes(table.data(), table.size() * sizeof(uint64_t));
  return o;
}

Status ParseBaseIndex(const uint8_t* p, size_t size, BaseIndex* out) {
  if (size < kHdrRegions + kHdrChecksumSize ||
      std::memcmp(p + kHdrMagic, kIndexMagic, sizeof(kIndexMagic)) != 0)
    return Corrupt("not a handoff base index");
  const uint32_t version = LoadLe<uint32_t>(p + kHdrVersion);
  if (version == kIndexVersionAbsolutePaths)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "base index version 1 (absolute paths) is no longer "
                  "supported; re-create the base");
  if (version != kIndexVersion)
    return Status(HANDOFF_E_UNSUPPORTED_VERSION,
                  "base index version " + std::to_string(version) +
                      " (this engine reads version " +
                      std::to_string(kIndexVersion) + ")");
  const uint32_t header_len = LoadLe<uint32_t>(p + kHdrLength);
  if (header_len < kHdrRegions + kHdrChecksumSize || header_len > size)
    return Corrupt("header length out of range");
  const size_t sum_at = header_len - kHdrChecksumSize;
  if (LoadLe<uint64_t>(p + sum_at) != Checksum64(p, sum_at))
    return Corrupt("header checksum mismatch");
  const uint64_t total = LoadLe<uint64_t>(p + kHdrChunks);
  const uint64_t slots = LoadLe<uint64_t>(p + kHdrSlots);
  out->distinct = LoadLe<uint64_t>(p + kHdrDistinct);
  std::memcpy(out->content_id, p + kHdrContentId, 16);
  const uint64_t hash_off = LoadLe<uint64_t>(p + kHdrHashOffset);
  const uint64_t table_off = LoadLe<uint64_t>(p + kHdrTableOffset);
  const uint32_t count = LoadLe<uint32_t>(p + kHdrRegionCount);
  if (count == 0 || count > HANDOFF_MAX_REGIONS)
    return Corrupt("region count out of range");
  ByteReader r(p + kHdrRegions, sum_at - kHdrRegions);
  HANDOFF_RETURN_IF_ERROR(ReadRegionRecords(&r, count, out));
  if (total != out->geometry.total_chunks()) return Corrupt("chunk count mismatch");
  if (slots == 0 || (slots & (slots - 1)) != 0 || slots < total)
    return Corrupt("table size invalid");
  if (hash_off % 16 != 0 || hash_off < header_len || hash_off > size ||
      (size - hash_off) / sizeof(Hash128) < total)
    return Corrupt("hash array outside the file");
  if (table_off % 8 != 0 || table_off < hash_off + total * sizeof(Hash128) ||
      table_off > size || (size - table_off) / 8 < slots)
    return Corrupt("table outside the file");
  out->hashes = reinterpret_cast<const Hash128*>(p + hash_off);
  out->table = reinterpret_cast<const uint64_t*>(p + table_off);
  out->slots = slots;
  return Status::Ok();
}

std::string CheckIndexFileName(const std::string& name) {
  if (name.empty()) return "empty file name";
  if (name.size() > kMaxFileName)
    return "file name longer than " + std::to_string(kMaxFileName) + " bytes";
  if (name.find('\0') != std::string::npos) return "NUL byte in file name";
  if (name[0] == '/') return "absolute path";
  for (size_t start = 0;;) {
    const size_t slash = name.find('/', start);
    const std::string part = name.substr(start, slash - start);
    if (part.empty()) return "empty path component";
    if (part == ".") return "'.' in path";
    if (part == "..") return "'..' in path";
    if (part.size() > kMaxFileComponent)
      return "path component longer than " +
             std::to_string(kMaxFileComponent) + " bytes";
    if (slash == std::string::npos) return "";
    start = slash + 1;
  }
}

}  // namespace handoff
