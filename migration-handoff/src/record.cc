// SPDX-License-Identifier: GPL-2.0-or-later
#include "record.h"

#include <cstring>

#include "byte_io.h"

namespace handoff {
namespace {

// Record header fields.
constexpr size_t kKindAt = 0;       // u8
constexpr size_t kRegionAt = 1;     // u8
constexpr size_t kFlagsAt = 2;      // u8
constexpr size_t kReservedAt = 3;   // u8, 0
constexpr size_t kIterationAt = 4;  // u32
constexpr size_t kSeqAt = 8;        // u64
constexpr size_t kIndexAt = 16;     // u64
// BASE_REF and SELF_REF bodies: u8 region, 7 bytes 0, u64 index, and for
// SELF_REF u64 source sequence number.
constexpr size_t kSrcRegionAt = 0;
constexpr size_t kSrcReservedAt = 1;
constexpr size_t kSrcReservedSize = 7;
constexpr size_t kSrcIndexAt = 8;
constexpr size_t kSrcSeqAt = 16;
constexpr size_t kBaseRefBodySize = 16;
constexpr size_t kSelfRefBodySize = 24;
// ZERO run body: u64 chunk count, at least 2 (one chunk is a plain ZERO).
constexpr size_t kRunBodySize = 8;

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

}  // namespace

size_t RecordBodySize(RecordKind kind, uint8_t flags) {
  switch (kind) {
    case RecordKind::kData: return kChunkSize;
    case RecordKind::kBaseRef: return kBaseRefBodySize;
    case RecordKind::kSelfRef: return kSelfRefBodySize;
    case RecordKind::kZero: return (flags & kRecordFlagRun) ? kRunBodySize : 0;
    case RecordKind::kIteration: return 0;
  }
  return 0;
}

void RecordWriter::PutHeader(size_t at, const Record& rec) {
  uint8_t* h = reinterpret_cast<uint8_t*>(plain_->data()) + at;
  h[kKindAt] = static_cast<uint8_t>(rec.kind);
  h[kRegionAt] = rec.region;
  h[kFlagsAt] = rec.flags;
  h[kReservedAt] = 0;
  StoreLe<uint32_t>(h + kIterationAt, rec.iteration);
  StoreLe<uint64_t>(h + kSeqAt, rec.seq);
  StoreLe<uint64_t>(h + kIndexAt, rec.index);
}

void RecordWriter::Append(const Record& rec) {
  const size_t at = plain_->size();
  const size_t body = RecordBodySize(rec.kind, rec.flags);
  plain_->append(kRecordHeaderSize + body, '\0');
  PutHeader(at, rec);
  uint8_t* b = reinterpret_cast<uint8_t*>(plain_->data()) + at + kRecordHeaderSize;
  switch (rec.kind) {
    case RecordKind::kData:
      std::memcpy(b, rec.data, kChunkSize);
      break;
    case RecordKind::kSelfRef:
      StoreLe<uint64_t>(b + kSrcSeqAt, rec.src_seq);
      [[fallthrough]];
    case RecordKind::kBaseRef:
      b[kSrcRegionAt] = rec.src_region;
      StoreLe<uint64_t>(b + kSrcIndexAt, rec.src_index);
      break;
    case RecordKind::kZero:
      if (rec.flags & kRecordFlagRun) StoreLe<uint64_t>(b, rec.count);
      break;
    case RecordKind::kIteration:
      break;
  }
}

size_t RecordWriter::Stage(const uint8_t* chunk) {
  const size_t at = plain_->size();
  plain_->append(kRecordHeaderSize, '\0');
  plain_->append(reinterpret_cast<const char*>(chunk), kChunkSize);
  return at;
}

const uint8_t* RecordWriter::Staged(size_t at) const {
  return reinterpret_cast<const uint8_t*>(plain_->data()) + at +
         kRecordHeaderSize;
}

void RecordWriter::Commit(size_t at, const Record& rec) { PutHeader(at, rec); }

void RecordWriter::Unstage(size_t at) { plain_->resize(at); }

void RecordWriter::RewriteAsXor(const Record& rec, const uint8_t* delta) {
  uint8_t* h = reinterpret_cast<uint8_t*>(plain_->data()) + rec.offset;
  std::memcpy(h + kRecordHeaderSize, delta, kChunkSize);
  h[kFlagsAt] |= kRecordFlagXor;
}

bool RecordIterator::Next(Record* rec) {
  if (!status_.ok() || pos_ == len_) return false;
  status_ = Parse(rec);
  return status_.ok();
}

Status RecordIterator::Parse(Record* rec) {
  ByteReader r(p_ + pos_, len_ - pos_);
  const size_t at = pos_;
  auto bad = [&](const std::string& why) {
    return Status(HANDOFF_E_BAD_RECORD, "record at plaintext offset " +
                                            std::to_string(at) + ": " + why);
  };
  const uint8_t* h = r.GetBytes(kRecordHeaderSize);
  if (h == nullptr)
    return Status(HANDOFF_E_BAD_RECORD,
                  "record header at plaintext offset " + std::to_string(at) +
                      " runs past the frame");
  *rec = Record();
  rec->offset = at;
  rec->region = h[kRegionAt];
  rec->flags = h[kFlagsAt];
  rec->iteration = LoadLe<uint32_t>(h + kIterationAt);
  rec->seq = LoadLe<uint64_t>(h + kSeqAt);
  rec->index = LoadLe<uint64_t>(h + kIndexAt);
  if (h[kReservedAt] != 0) return bad("reserved byte not zero");
  if (!RecordKindFromByte(h[kKindAt], &rec->kind))
    return bad("unknown record type " + std::to_string(h[kKindAt]));
  const uint8_t data_flags = kRecordFlagXor | kRecordFlagPinned;
  if (rec->flags != 0 &&
      !(rec->kind == RecordKind::kData && (rec->flags & ~data_flags) == 0) &&
      !(rec->kind == RecordKind::kZero && rec->flags == kRecordFlagRun))
    return bad("flags " + std::to_string(rec->flags) + " not valid here");
  if (rec->seq == 0) return bad("sequence number 0");
  if (rec->kind == RecordKind::kIteration &&
      (rec->region != 0 || rec->index != 0))
    return bad("iteration marker with a chunk address");
  const uint8_t* b = r.GetBytes(RecordBodySize(rec->kind, rec->flags));
  switch (rec->kind) {
    case RecordKind::kZero:
      if (!(rec->flags & kRecordFlagRun)) break;
      if (b == nullptr) return bad("zero run count runs past the frame");
      rec->count = LoadLe<uint64_t>(b);
      // The region bound is the decoder's to check (it knows the geometry).
      if (rec->count < 2) return bad("zero run of fewer than 2 chunks");
      break;
    case RecordKind::kIteration:
      break;
    case RecordKind::kData:
      if (b == nullptr) return bad("chunk data runs past the frame");
      rec->data = b;
      break;
    case RecordKind::kBaseRef:
    case RecordKind::kSelfRef: {
      const bool self = rec->kind == RecordKind::kSelfRef;
      if (b == nullptr)
        return bad(std::string(self ? "self" : "base") +
                   " reference runs past the frame");
      if (!AllZero(b + kSrcReservedAt, kSrcReservedSize))
        return bad("reserved bytes not zero");
      rec->src_region = b[kSrcRegionAt];
      rec->src_index = LoadLe<uint64_t>(b + kSrcIndexAt);
      if (self) rec->src_seq = LoadLe<uint64_t>(b + kSrcSeqAt);
      break;
    }
  }
  pos_ += r.pos();
  return Status::Ok();
}

}  // namespace handoff
