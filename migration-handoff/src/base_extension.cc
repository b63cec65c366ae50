// SPDX-License-Identifier: GPL-2.0-or-later
//
// Extended bases: a VM that gained a writable disk after its base was
// saved (a data volume) hands that disk off too, as a region the base
// reads as zeros. Both ends extend the base the same way, by the same
// names and sizes, and the derived content ID makes a stream made for one
// extension refuse any other (WRONG_BASE), so a missing or resized disk
// at the destination is named before anything is applied.
#include <cstring>

#include <xxhash.h>

#include "base.h"

namespace handoff {
namespace {

// XXH3-128 over "QHOFXTND", the parent's ID, and per extra region its
// kind, name length, name and size (docs/stream-format.md, Base ID).
Status ExtendedId(const uint8_t parent_id[16], const std::vector<Region>& extra,
                  uint8_t id[16]) {
  XXH3_state_t* st = XXH3_createState();
  if (st == nullptr) return Status(HANDOFF_E_NO_MEMORY, "XXH3_createState");
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, "QHOFXTND", 8);
  XXH3_128bits_update(st, parent_id, 16);
  HashRegionDescriptors(st, extra);
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
  XXH3_freeState(st);
  std::memcpy(id, canon.digest, 16);
  return Status::Ok();
}

}  // namespace

Status Base::Extend(const Base* parent, const std::vector<Region>& extra,
                    std::unique_ptr<Base>* out) {
  if (extra.empty())
    return Status(HANDOFF_E_INVALID_ARGUMENT, "no region to extend the base by");
  std::vector<Region> regions = parent->geometry_.regions();
  regions.insert(regions.end(), extra.begin(), extra.end());
  std::unique_ptr<Base> base(new Base());
  base->geometry_ = Geometry(std::move(regions));
  HANDOFF_RETURN_IF_ERROR(base->geometry_.Validate());
  HANDOFF_RETURN_IF_ERROR(ExtendedId(parent->id_, extra, base->id_));
  base->parent_ = parent;
  base->distinct_ = parent->distinct_;
  // The parent's index finds only the parent's chunks, whose global
  // numbers do not change: the extra regions come last.
  base->hashes_ = parent->hashes_;
  base->table_ = parent->table_;
  base->mask_ = parent->mask_;
  base->region_data_ = parent->region_data_;
  for (const Backing& b : parent->backing_) {
    Backing copy;
    copy.name = b.name;
    copy.file_size = b.file_size;
    base->backing_.push_back(std::move(copy));
  }
  for (const Region& r : extra) {
    auto zeros = std::make_unique<MappedFile>();
    HANDOFF_RETURN_IF_ERROR(zeros->MapZeros(r.size));
    base->region_data_.push_back(zeros->data());
    base->zeros_.push_back(std::move(zeros));
    base->backing_.emplace_back();
  }
  *out = std::move(base);
  return Status::Ok();
}

}  // namespace handoff
