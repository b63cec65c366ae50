// SPDX-License-Identifier: GPL-2.0-or-later
//
// The kinds of record a frame carries, as numbered on the wire, and the
// one mapping between them and the C API's statistics slots
// (HANDOFF_REC_*). The two numberings differ on purpose: the API also
// counts SAME chunks, which cost no record, and does not count iteration
// markers, which carry no chunk. Everything that counts or names records
// goes through this file so that neither numbering is spelled twice.
#ifndef HANDOFF_RECORD_KIND_H
#define HANDOFF_RECORD_KIND_H

#include <array>
#include <cstddef>
#include <cstdint>

#include "handoff.h"

namespace handoff {

// Values are the type byte of the record header (docs/stream-format.md).
enum class RecordKind : uint8_t {
  kZero = 1,
  kData = 2,
  kBaseRef = 3,
  kSelfRef = 4,
  kIteration = 5,
};

inline constexpr size_t kRecordKindCount = 5;

// In wire order, which is also the order of the end record's counters.
inline constexpr std::array<RecordKind, kRecordKindCount> kAllRecordKinds = {
    RecordKind::kZero, RecordKind::kData, RecordKind::kBaseRef,
    RecordKind::kSelfRef, RecordKind::kIteration};

// The kind a type byte names, or false for a byte that names none.
inline constexpr bool RecordKindFromByte(uint8_t byte, RecordKind* kind) {
  if (byte < 1 || byte > kRecordKindCount) return false;
  *kind = static_cast<RecordKind>(byte);
  return true;
}

// The HANDOFF_REC_* slot that counts @kind in the API's statistics, or -1
// for iteration markers, which no slot counts.
inline constexpr int ApiStatsSlot(RecordKind kind) {
  switch (kind) {
    case RecordKind::kZero: return HANDOFF_REC_ZERO;
    case RecordKind::kData: return HANDOFF_REC_DATA;
    case RecordKind::kBaseRef: return HANDOFF_REC_BASE_REF;
    case RecordKind::kSelfRef: return HANDOFF_REC_SELF_REF;
    case RecordKind::kIteration: return -1;
  }
  return -1;
}

// Plural name for messages ("end record says 3 zero records, ...").
inline constexpr const char* RecordKindPlural(RecordKind kind) {
  switch (kind) {
    case RecordKind::kZero: return "zero records";
    case RecordKind::kData: return "data records";
    case RecordKind::kBaseRef: return "base references";
    case RecordKind::kSelfRef: return "self references";
    case RecordKind::kIteration: return "iteration markers";
  }
  return "records";
}

// A counter per record kind, stored in wire order.
class RecordCounts {
 public:
  uint64_t& operator[](RecordKind kind) { return n_[Slot(kind)]; }
  uint64_t operator[](RecordKind kind) const { return n_[Slot(kind)]; }
  bool operator==(const RecordCounts& other) const = default;

 private:
  static constexpr size_t Slot(RecordKind kind) {
    return static_cast<size_t>(kind) - 1;
  }
  std::array<uint64_t, kRecordKindCount> n_ = {};
};

}  // namespace handoff

#endif  // HANDOFF_RECORD_KIND_H
