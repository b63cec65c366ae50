// SPDX-License-Identifier: GPL-2.0-or-later
//
// How a decoder applies the records of a segmented stream (stream version
// 3): each chunk has exactly one record, local kinds (ZERO, BASE_REF) only
// in the table part, remote kinds (DATA, SELF_REF) only in segments, and a
// self reference names a PINNED data version of its own segment or of one
// it depends on. Pins are held, within the decoder's held-bytes limit,
// until every segment that may name them is applied.
#include <algorithm>
#include <cstring>

#include "chunk.h"
#include "decoder.h"
#include "segment_reader.h"

namespace handoff {
namespace {


bool IsLocalKind(RecordKind k) {
  return k == RecordKind::kZero || k == RecordKind::kBaseRef;
}

}  // namespace

// Everything about @rec that needs no write: kind for where it is, region
// kind against the segment's flags, range, one record per chunk.
Status Decoder::CheckSegmentedRecord(const Record& rec) const {
  const Geometry& g = base_->geometry();
  const SegmentState& st = *segments_;
  const bool local = st.current == kLocalSegment;
  if (rec.kind == RecordKind::kIteration || local != IsLocalKind(rec.kind))
    return Status(HANDOFF_E_BAD_RECORD,
                  std::string("a record of type ") +
                      std::to_string(static_cast<int>(rec.kind)) +
                      (local ? " in the table part" : " in a segment"));
  if (!g.Contains(rec.region, rec.index))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunk " + std::to_string(rec.index) + " of region " +
                      std::to_string(rec.region) + " outside the geometry");
  const bool disk = g.regions()[rec.region].kind == HANDOFF_REGION_DISK;
  if (!local && !(st.current_flags & (disk ? kSegmentFlagDisk : kSegmentFlagMemory)))
    return Status(HANDOFF_E_BAD_RECORD,
                  std::string("a ") + (disk ? "disk" : "memory") +
                      " chunk in a segment whose flags exclude it");
  if (rec.count - 1 > g.regions()[rec.region].chunks() - 1 - rec.index)
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "zero run of " + std::to_string(rec.count) +
                      " chunks from " + std::to_string(rec.index) +
                      " runs past its region");
  // The index must place the chunks where the record is.
  const IndexExtent* e = LocateChunk(st.table.index, rec.region, rec.index);
  if (e == nullptr ||
      e->place != (local ? HANDOFF_CHUNK_LOCAL : HANDOFF_CHUNK_REMOTE) ||
      (!local && e->segment != st.current) ||
      rec.count - 1 > e->first + e->count - 1 - rec.index)
    return Status(HANDOFF_E_BAD_RECORD,
                  "chunk " + std::to_string(rec.index) + " of region " +
                      std::to_string(rec.region) +
                      ": the chunk index places it elsewhere");
  const uint64_t global = g.Global(rec.region, rec.index);
  for (uint64_t i = 0; i < rec.count; i++)
    if (version_[global + i] != 0)
      return Status(HANDOFF_E_DUPLICATE_CHUNK,
                    "chunk " + std::to_string(rec.index + i) + " of region " +
                        std::to_string(rec.region) +
                        " has a second record (sequence " +
                        std::to_string(rec.seq) + ")");
  return Status::Ok();
}

// The pinned bytes a self reference names: its source must be a PINNED
// data version of this segment or of one it lists as a dependency.
Status Decoder::ResolveSelfRef(const Record& rec, const uint8_t** data) const {
  const Geometry& g = base_->geometry();
  const SegmentState& st = *segments_;
  const std::string what = "self reference to chunk " +
                           std::to_string(rec.src_index) + " of region " +
                           std::to_string(rec.src_region) + " version " +
                           std::to_string(rec.src_seq);
  if (!g.Contains(rec.src_region, rec.src_index) || rec.src_seq == 0 ||
      rec.src_seq >= rec.seq)
    return Status(HANDOFF_E_BAD_SELF_REF,
                  what + ", which cannot precede record " + std::to_string(rec.seq));
  auto it = st.pins.find({g.Global(rec.src_region, rec.src_index), rec.src_seq});
  if (it == st.pins.end())
    return Status(HANDOFF_E_BAD_SELF_REF,
                  what + ", which is no pinned data version applied before");
  const uint32_t src = it->second.segment;
  const uint32_t* deps = st.table.DepsOf(st.current);
  const uint32_t* deps_end = deps + st.table.entries[st.current].dep_count;
  if (src != st.current && !std::binary_search(deps, deps_end, src))
    return Status(HANDOFF_E_BAD_SELF_REF,
                  what + ", in segment " + std::to_string(src) +
                      ", which is not a dependency");
  *data = reinterpret_cast<const uint8_t*>(it->second.bytes.data());
  return Status::Ok();
}

Status Decoder::ApplySegmentedRecord(const Record& rec) {
  HANDOFF_RETURN_IF_ERROR(CheckSegmentedRecord(rec));
  SegmentState& st = *segments_;
  per_kind_[rec.kind]++;
  records_++;
  st.chunks_recorded += rec.count;
  const uint64_t global = base_->geometry().Global(rec.region, rec.index);
  static const uint8_t zeros[kChunkSize] = {};
  const uint8_t* data = zeros;
  uint8_t x[kChunkSize];
  switch (rec.kind) {
    case RecordKind::kZero:
      std::fill_n(version_.begin() + global, rec.count, rec.seq);
      if (rec.count == 1) break;
      zero_runs_++;
      return sink_->WriteZeros(rec.region, rec.index, rec.count);
    case RecordKind::kBaseRef:
      if (!base_->geometry().Contains(rec.src_region, rec.src_index))
        return Status(HANDOFF_E_BAD_BASE_REF,
                      "base reference to chunk " + std::to_string(rec.src_index) +
                          " of region " + std::to_string(rec.src_region) +
                          ", which the base does not have");
      data = base_->Chunk(rec.src_region, rec.src_index);
      break;
    case RecordKind::kSelfRef:
      HANDOFF_RETURN_IF_ERROR(ResolveSelfRef(rec, &data));
      break;
    case RecordKind::kData:
      data = rec.data;
      if (rec.flags & kRecordFlagXor) {
        XorChunk(rec.data, base_->Chunk(rec.region, rec.index), x);
        data = x;
      }
      if (rec.flags & kRecordFlagPinned) {
        if (held_ + kPinCost > HANDOFF_DECODER_MAX_HELD_BYTES)
          return Status(HANDOFF_E_LENGTH_LIMIT,
                        "pinned data versions would take more than " +
                            std::to_string(HANDOFF_DECODER_MAX_HELD_BYTES >> 20) +
                            " MiB: apply the segments that reference them");
        held_ += kPinCost;
        st.pins[{global, rec.seq}] = {
            std::string(reinterpret_cast<const char*>(data), kChunkSize),
            st.current};
        st.pins_of[st.current].push_back({global, rec.seq});
      }
      break;
    case RecordKind::kIteration:
      break;
  }
  version_[global] = rec.seq;
  is_data_[global] = rec.kind == RecordKind::kData;
  return sink_->Write(rec.region, rec.index, data);
}

void Decoder::SegmentDone(uint32_t number) {
  SegmentState& st = *segments_;
  st.applied[number] = 1;
  st.applied_count++;
  for (uint32_t i = 0; i < st.table.entries[number].dep_count; i++) {
    const uint32_t d = st.table.DepsOf(number)[i];
    if (--st.dependents_left[d] == 0) ReleasePins(d);
  }
  if (st.dependents_left[number] == 0) ReleasePins(number);
}

void Decoder::ReleasePins(uint32_t number) {
  SegmentState& st = *segments_;
  auto it = st.pins_of.find(number);
  if (it == st.pins_of.end()) return;
  for (const SegmentState::Version& v : it->second) st.pins.erase(v);
  held_ -= it->second.size() * kPinCost;
  st.pins_of.erase(it);
}

Status Decoder::FinishSegmented() {
  const SegmentState& st = *segments_;
  if (st.applied_count == st.table.entries.size()) {
    // Every record lies in an extent of its place, once: equal counts
    // mean every indexed chunk got its record.
    if (st.chunks_recorded != st.table.indexed_chunks)
      return Status(HANDOFF_E_BAD_SEGMENT,
                    "the chunk index lists " +
                        std::to_string(st.table.indexed_chunks) +
                        " chunks, the records gave " +
                        std::to_string(st.chunks_recorded));
    state_ = State::kDone;
    return Status::Ok();
  }
  const uint32_t first = static_cast<uint32_t>(
      std::find(st.applied.begin(), st.applied.end(), 0) - st.applied.begin());
  return Status(HANDOFF_E_TRUNCATED,
                std::to_string(st.table.entries.size() - st.applied_count) +
                    " segments never applied, first segment " +
                    std::to_string(first));
}

// Feed: the table part once it is whole, then each segment once it is.
Status Decoder::ProcessSegmented(const uint8_t* p, size_t avail,
                                 bool* waiting) {
  *waiting = false;
  if (!segments_) {
    uint64_t table_len = 0;
    size_t needed = 0;
    Status s = SegmentTableLength(p, avail, &table_len, &needed);
    if (s.code() == HANDOFF_E_TRUNCATED || (s.ok() && avail < table_len)) {
      *waiting = true;
      return Status::Ok();
    }
    HANDOFF_RETURN_IF_ERROR(s);
    HANDOFF_RETURN_IF_ERROR(LoadCheckedTable(p, table_len, nullptr));
    segments_->fed = true;
    buf_pos_ += table_len;
    return Status::Ok();
  }
  SegmentState& st = *segments_;
  if (!st.fed)
    return Status(HANDOFF_E_STATE,
                  "a table loaded with handoff_decoder_load_table takes "
                  "segments through handoff_decoder_apply_segment");
  if (st.next_fed == st.table.entries.size()) {
    state_ = State::kDone;
    return Status::Ok();
  }
  const uint32_t k = st.next_fed;
  const uint32_t length = st.table.entries[k].length;
  if (avail < length) {
    *waiting = true;
    return Status::Ok();
  }
  HANDOFF_RETURN_IF_ERROR(CheckSegment(k, p, length));
  HANDOFF_RETURN_IF_ERROR(DecodeSegment(k, p, length));
  st.next_fed++;
  buf_pos_ += length;
  return Status::Ok();
}

}  // namespace handoff
