// SPDX-License-Identifier: GPL-2.0-or-later
#include "segment_packer.h"

#include <algorithm>

#include "format.h"
#include "frame_job.h"
#include "segment_table.h"

namespace handoff {
namespace {

// A frame's plaintext may not exceed kMaxPlainLength: this many DATA
// records always fit in it.
constexpr size_t kMaxRecordsPerFrame =
    kMaxPlainLength / (kRecordHeaderSize + kChunkSize);

class SegmentCutter {
 public:
  SegmentCutter(const Base& base, const HandoffMode& mode,
                const std::vector<RemoteRecord>& records)
      : base_(base), mode_(mode), records_(records) {
    plain_.reserve(records.size());
    for (const RemoteRecord& r : records) plain_.push_back(r.rec);
  }

  // Encodes records [@at, @at + @n) as frame @seq into *@frame; whether
  // it fits a segment with the segment header.
  Status Try(size_t at, size_t n, uint64_t seq, std::string* frame,
             bool* fits) {
    FrameTally tally;
    HANDOFF_RETURN_IF_ERROR(EncodeRecordFrame(base_, &compressor_, mode_, seq,
                                              plain_.data() + at, n, frame,
                                              &tally));
    *fits = kSegmentHeaderSize + frame->size() <= kMaxSegmentBytes;
    if (*fits) last_tally_ = tally;
    return Status::Ok();
  }

  // The most records from @at that fit one segment, searched from the
  // previous segment's count (neighbouring data compresses alike, so one
  // more usually does not fit: two trials), galloping away from it until
  // bracketed, then bisecting; the frame in *@frame.
  Status Cut(size_t at, uint64_t seq, size_t* count, std::string* frame) {
    const size_t left = std::min(records_.size() - at, kMaxRecordsPerFrame);
    size_t lo = 0, hi = left + 1;  // lo fits (0: none known), hi does not
    size_t n = std::clamp<size_t>(guess_, 1, left), step = 1;
    std::string trial;
    bool fits = false;
    while (lo + 1 < hi) {
      HANDOFF_RETURN_IF_ERROR(Try(at, n, seq, &trial, &fits));
      if (fits) {
        lo = n;
        frame->swap(trial);
        tally_fit_ = last_tally_;
      } else {
        hi = n;
      }
      if (hi == left + 1) {  // no count known not to fit: go up
        n = std::min(left, lo + step);
        step *= 2;
      } else if (lo == 0) {  // none known to fit: go down
        n = hi > step ? hi - step : 1;
        step *= 2;
      } else {
        n = lo + (hi - lo) / 2;
      }
    }
    if (lo == 0)  // one record always fits: 56 + 4120 bytes stored
      return Status(HANDOFF_E_INTERNAL, "a single record does not fit a segment");
    *count = guess_ = lo;
    return Status::Ok();
  }

  // The tally of the frame Cut returned.
  const FrameTally& tally_fit() const { return tally_fit_; }

 private:
  const Base& base_;
  const HandoffMode& mode_;
  const std::vector<RemoteRecord>& records_;
  std::vector<Record> plain_;
  Compressor compressor_;
  size_t guess_ = 16;
  FrameTally last_tally_;
  FrameTally tally_fit_;
};

uint32_t RegionFlag(const Base& base, uint8_t region) {
  return base.geometry().regions()[region].kind == HANDOFF_REGION_DISK
             ? kSegmentFlagDisk
             : kSegmentFlagMemory;
}

}  // namespace

Status EncodeRecordFrame(const Base& base, Compressor* compressor,
                         const HandoffMode& mode, uint64_t frame_seq,
                         const Record* records, size_t count,
                         std::string* frame, FrameTally* tally) {
  FrameJob job;
  job.frame_seq = frame_seq;
  job.mode = mode;
  RecordWriter writer(&job.plain);
  for (size_t i = 0; i < count; i++) {
    writer.Append(records[i]);
    if (records[i].kind == RecordKind::kData && mode.delta == HANDOFF_DELTA_PREFIX)
      job.prefix.push_back(
          base.geometry().Global(records[i].region, records[i].index));
  }
  job.records = static_cast<uint32_t>(count);
  EncodeFrame(base, compressor, &job);
  HANDOFF_RETURN_IF_ERROR(job.status);
  tally->plain_bytes = job.plain.size();
  tally->xor_chunks = job.xor_chunks;
  frame->swap(job.bytes);
  return Status::Ok();
}

Status PackSegments(const Base& base, const HandoffMode& mode,
                    uint64_t first_frame,
                    const std::vector<RemoteRecord>& records,
                    PackedSegments* out) {
  SegmentCutter cutter(base, mode, records);
  std::vector<uint32_t> segment_of(records.size());
  std::string frame;
  for (size_t at = 0; at < records.size();) {
    const uint32_t number = static_cast<uint32_t>(out->segments.size());
    if (number >= kMaxSegments)
      return Status(HANDOFF_E_LENGTH_LIMIT,
                    "more than " + std::to_string(kMaxSegments) + " segments");
    size_t n = 0;
    HANDOFF_RETURN_IF_ERROR(cutter.Cut(at, first_frame + number, &n, &frame));
    SegmentHeader h;
    h.number = number;
    h.frame_count = 1;
    std::vector<uint32_t> deps;
    for (size_t i = at; i < at + n; i++) {
      segment_of[i] = number;
      h.flags |= RegionFlag(base, records[i].rec.region);
      if (records[i].rec.kind == RecordKind::kSelfRef &&
          segment_of[records[i].source] != number)
        deps.push_back(segment_of[records[i].source]);
    }
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    std::string segment(kSegmentHeaderSize, '\0');
    SerializeSegmentHeader(h, reinterpret_cast<uint8_t*>(segment.data()));
    segment += frame;
    out->segments.push_back(std::move(segment));
    out->deps.push_back(std::move(deps));
    out->tally.plain_bytes += cutter.tally_fit().plain_bytes;
    out->tally.xor_chunks += cutter.tally_fit().xor_chunks;
    at += n;
  }
  out->segment_of = std::move(segment_of);
  return Status::Ok();
}

}  // namespace handoff
