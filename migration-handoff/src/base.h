// SPDX-License-Identifier: GPL-2.0-or-later
//
// Base: the VM image both ends already hold (disks and memory regions),
// its content ID, and the index from chunk hash to one location holding
// that content. The index is built once, saved in one file next to the
// region files (which it names relative to its own directory, so that the
// whole directory can move; layout in base_index.h) and mapped on reuse;
// the base files are mapped too, so opening costs no hashing. Verify
// re-reads them when their content must be proven rather than assumed.
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

// Feeds each region's kind, name length, name and size to @st: the part
// of a content ID (docs/stream-format.md, Base ID) that names regions.
void HashRegionDescriptors(XXH3_state_t* st, const std::vector<Region>& regions);

class Base {
 public:
  // Hashes @sources and builds the index; saves it at @index_path unless
  // that is empty. Saved, every region must be a file inside the directory
  // that will hold the index.
  static Status Create(const std::vector<RegionSource>& sources,
                       const std::string& index_path,
                       std::unique_ptr<Base>* out);
  // Maps an index saved by Create and the region files it names, and
  // checks that its content ID is the one its hashes give. File contents
  // are not read: see Verify.
  static Status Open(const std::string& index_path, std::unique_ptr<Base>* out);
  // @parent with @extra regions appended that the base VM did not have
  // (a data disk attached later) and that read as zeros in it. @parent
  // must outlive the result. Its ID is derived from @parent's and the
  // extra regions' kinds, names and sizes (base_extension.cc).
  static Status Extend(const Base* parent, const std::vector<Region>& extra,
                       std::unique_ptr<Base>* out);

  // Reads every region again and compares each chunk's hash with the
  // index: HANDOFF_E_BASE_CHANGED names the first chunk that differs. An
  // extended base verifies its parent.
  Status Verify() const;

  const Geometry& geometry() const { return geometry_; }
  const uint8_t* id() const { return id_; }
  uint64_t distinct() const { return distinct_; }
  // Region @r's file as recorded: relative to the index's directory (as
  // given to Create when nothing was saved); empty for memory.
  const std::string& file_name(size_t r) const { return backing_[r].name; }
  const uint8_t* region_data(size_t r) const { return region_data_[r]; }
  // Copies @len bytes at @offset of region @r into @buf: from the file
  // the base opened with pread when the region has one (the kernel copies
  // into @buf, with no page fault per 4 KiB of the mapping: a VM's RAM
  // loaded this way takes a fraction of a memcpy from the mapping), else
  // from memory. The range must lie inside the region. A file cut short
  // since it was opened gives HANDOFF_E_BASE_CHANGED, not SIGBUS.
  Status Read(uint32_t r, uint64_t offset, uint8_t* buf, size_t len) const;

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
  struct Backing {
    std::string name;         // see file_name()
    uint64_t file_size = 0;   // the file's size when indexed
    std::unique_ptr<MappedFile> file;  // null for memory
  };
  struct VerifyTally;

  Base() = default;
  Status AddSource(const RegionSource& src, int index_dir,
                   const std::string& index_dir_path, Region* region);
  Status AttachIndex(const uint8_t* data, size_t size, int index_dir);
  void VerifyRange(uint64_t begin, uint64_t end, uint8_t* buf,
                   VerifyTally* tally) const;

  Geometry geometry_;
  uint8_t id_[16] = {};
  uint64_t distinct_ = 0;
  std::vector<const uint8_t*> region_data_;
  std::vector<Backing> backing_;  // per region
  // Hashes in global chunk order, and an open-addressing table of
  // global chunk number + 1 (0 = empty), both inside the index image.
  const Hash128* hashes_ = nullptr;
  const uint64_t* table_ = nullptr;
  uint64_t mask_ = 0;
  std::vector<uint64_t> owned_;  // index image built in memory (aligned)
  MappedFile index_file_;
  // Extend: the base extended, and the zeros of the extra regions.
  const Base* parent_ = nullptr;
  std::vector<std::unique_ptr<MappedFile>> zeros_;
};

}  // namespace handoff

#endif  // HANDOFF_BASE_H
