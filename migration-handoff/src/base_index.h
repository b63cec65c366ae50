// SPDX-License-Identifier: GPL-2.0-or-later
//
// The base index file, version 2 (docs/stream-format.md, "Base index"):
// a header naming the regions and their files, the chunk hashes in
// global order and an open-addressing table from hash to one chunk per
// distinct content. Both arrays are native little-endian so that a
// mapped index is used in place. This file is the only one that knows
// the layout; base.{h,cc} decides what to put in it and what to trust.
#ifndef HANDOFF_BASE_INDEX_H
#define HANDOFF_BASE_INDEX_H

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "chunk.h"
#include "geometry.h"
#include "status.h"

namespace handoff {

// A region's file as the index records it.
struct IndexedFile {
  std::string name;    // relative to the index's directory
  uint64_t size = 0;   // the file's size when indexed
};

// An index's contents. Read from an image, the arrays point into it.
struct BaseIndex {
  Geometry geometry;
  std::vector<IndexedFile> files;   // per region
  uint8_t content_id[16] = {};
  uint64_t distinct = 0;            // informational
  const Hash128* hashes = nullptr;  // per global chunk
  const uint64_t* table = nullptr;  // global chunk + 1 per slot, 0 = empty
  uint64_t slots = 0;               // a power of two
};

// The image of an index over @geometry, @files and @content_id, holding
// @hashes (per global chunk) and a table of the chunks whose content is
// not @skip'ped (the zero chunk is never worth a reference).
std::string BuildBaseIndex(const Geometry& geometry,
                           const std::vector<IndexedFile>& files,
                           const uint8_t content_id[16],
                           const std::vector<Hash128>& hashes,
                           const std::function<bool(uint64_t global)>& skip);

// Reads the image @p of @size bytes: header, region records and where the
// arrays are, with HANDOFF_E_INDEX_CORRUPT (or UNSUPPORTED_VERSION, or
// BAD_GEOMETRY) for what does not hold. The content ID, file names and
// files are the caller's to check.
Status ParseBaseIndex(const uint8_t* p, size_t size, BaseIndex* out);

// The table slot where probing for @h starts; probing goes on one slot at
// a time, wrapping, until an empty slot.
inline uint64_t FirstProbe(const Hash128& h, uint64_t slots) {
  return h.lo & (slots - 1);
}

// Why @name cannot be a recorded file name, or "" when it can: it must
// stay beneath the index's directory by its spelling alone.
std::string CheckIndexFileName(const std::string& name);

}  // namespace handoff

#endif  // HANDOFF_BASE_INDEX_H
