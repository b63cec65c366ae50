// SPDX-License-Identifier: GPL-2.0-or-later
//
// Base: the VM image both ends already hold (disks and memory regions),
// its content ID, and the index from chunk hash to one location holding
// that content. The index is built once, saved in one file and mapped on
// reuse; the base files are mapped too, so opening costs no hashing.
#ifndef HANDOFF_BASE_H
#define HANDOFF_BASE_H

#include <memory>
#include <string>
#include <vector>

#include "chunk.h"
#include "geometry.h"
#include "mapped_file.h"
#include "status.h"

namespace handoff {

struct RegionSource {
  Region region;            // size 0 with a path: the file's size
  std::string path;         // file holding the region, or empty
  const uint8_t* data = nullptr;  // memory holding it, when no path
};

class Base {
 public:
  // Hashes @sources and builds the index; saves it at @index_path unless
  // that is empty.
  static Status Create(const std::vector<RegionSource>& sources,
                       const std::string& index_path,
                       std::unique_ptr<Base>* out);
  // Maps an index saved by Create and the region files it names.
  static Status Open(const std::string& index_path, std::unique_ptr<Base>* out);

  const Geometry& geometry() const { return geometry_; }
  const uint8_t* id() const { return id_; }
  uint64_t distinct() const { return distinct_; }

  const uint8_t* Chunk(uint32_t region, uint64_t index) const {
    return region_data_[region] + (index << kChunkShift);
  }
  const uint8_t* ChunkGlobal(uint64_t global) const {
    uint32_t r;
    uint64_t i;
    geometry_.Locate(global, &r, &i);
    return Chunk(r, i);
  }
  // Finds a base chunk whose bytes equal @data (hash @h), confirmed by a
  // byte comparison. Zero chunks are not indexed.
  bool Find(const Hash128& h, const uint8_t* data, uint64_t* global) const;

 private:
  Base() = default;
  Status BuildIndex();
  Status Serialize(const std::vector<std::string>& paths,
                   const std::vector<FileIdentity>& files, std::string* out);
  Status AttachIndex(const uint8_t* data, size_t size, bool check_files);

  Geometry geometry_;
  uint8_t id_[16] = {};
  uint64_t distinct_ = 0;
  std::vector<const uint8_t*> region_data_;
  std::vector<std::unique_ptr<MappedFile>> region_files_;
  // Hashes in global chunk order, and an open-addressing table of
  // global chunk number + 1 (0 = empty), both inside the index image.
  const Hash128* hashes_ = nullptr;
  const uint64_t* table_ = nullptr;
  uint64_t mask_ = 0;
  std::vector<uint64_t> owned_;  // index image built in memory (aligned)
  MappedFile index_file_;
};

}  // namespace handoff

#endif  // HANDOFF_BASE_H
