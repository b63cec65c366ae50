// SPDX-License-Identifier: GPL-2.0-or-later
#include "segment_packer.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <string>

#include "format.h"
#include "frame_job.h"
#include "segment_table.h"
#include "workers.h"

namespace handoff {
namespace {

// A frame's plaintext may not exceed kMaxPlainLength: this many DATA
// records always fit in it.
constexpr size_t kMaxRecordsPerFrame =
    kMaxPlainLength / (kRecordHeaderSize + kChunkSize);

// Records a part holds: a part is cut into segments by one thread, on its
// own. Parts are fixed by record count (16 MiB of chunks; PartBounds),
// not by the number of threads, so the stream is the same whatever the
// threads; a part's last segment may be less full.
constexpr size_t kRecordsPerPart = 4096;

// One part's segments: their frames (numbered from 0 until the part is
// placed) and how many records each holds.
struct PartCut {
  std::vector<std::string> frames;
  std::vector<size_t> counts;
  FrameTally tally;
  Status status;
};

// A segment's frame is aimed at this much of a segment's room (31/32)
// and taken once it fills 15/16 of it: a few percent more segments, and
// one or two trials for most instead of a search to the last record.
constexpr size_t kRoom = kMaxSegmentBytes - kSegmentHeaderSize;
constexpr double kAim = kRoom * 31.0 / 32.0;
constexpr size_t kFullEnough = kRoom / 16 * 15;

// The next count to try, strictly between @lo (fits, @lo_size bytes; 0:
// none known) and @hi (does not, @hi_size bytes; @left + 1: none known):
// where a straight line through what was seen meets the aim.
size_t NextTrial(size_t lo, size_t lo_size, size_t hi, size_t hi_size,
                 size_t left) {
  double n;
  if (lo == 0)  // only a count too many: scale it down
    n = static_cast<double>(hi) * kAim / static_cast<double>(hi_size);
  else if (hi == left + 1)  // only a count that fits: scale it up
    n = static_cast<double>(lo) * kAim / static_cast<double>(lo_size);
  else if (hi_size > lo_size)
    n = static_cast<double>(lo) + static_cast<double>(hi - lo) *
                                      (kAim - static_cast<double>(lo_size)) /
                                      static_cast<double>(hi_size - lo_size);
  else
    n = static_cast<double>(lo + (hi - lo) / 2);
  const size_t want = n < 1 ? 1 : static_cast<size_t>(n);
  if (want <= lo || want >= hi) return lo + (hi - lo) / 2;
  return want;
}

class SegmentCutter {
 public:
  SegmentCutter(const Base& base, const HandoffMode& mode,
                const std::vector<Record>& plain,
                const std::vector<RemoteRecord>& records)
      : base_(base), mode_(mode), plain_(plain), records_(records) {}

  // Encodes records [@at, @at + @n) as one frame into *@frame; whether it
  // fits a segment with the segment header.
  Status Try(size_t at, size_t n, std::string* frame, bool* fits) {
    FrameTally tally;
    HANDOFF_RETURN_IF_ERROR(EncodeRecordFrame(base_, &compressor_, mode_, 0,
                                              plain_.data() + at, n, frame,
                                              &tally));
    *fits = kSegmentHeaderSize + frame->size() <= kMaxSegmentBytes;
    if (*fits) last_tally_ = tally;
    return Status::Ok();
  }

  // Records from @at (before @end) for one segment, filling at least
  // 15/16 of it when they can; the frame in *@frame. Each trial
  // compresses the whole frame (lzma-6 on up to 4 MiB of plaintext when
  // the data compresses well), so trials are few: the first at the
  // previous segment's count (neighbouring data compresses alike), the
  // next where the sizes seen so far put the aim (a frame's size grows
  // about linearly with its records), bisecting only when that says
  // nothing new. A frame that fits with less room left than its own
  // average record is as full as it gets.
  Status Cut(size_t at, size_t end, size_t* count, std::string* frame) {
    const size_t left = std::min(end - at, kMaxRecordsPerFrame);
    size_t lo = 0, hi = left + 1;  // lo fits (0: none known), hi does not
    size_t lo_size = 0, hi_size = 0;
    size_t n = std::clamp<size_t>(guess_, 1, left);
    std::string trial;
    bool fits = false;
    int same_side = 0;  // trials in a row that moved the same end
    bool last_fit = false;
    while (lo + 1 < hi) {
      HANDOFF_RETURN_IF_ERROR(Try(at, n, &trial, &fits));
      same_side = fits == last_fit ? same_side + 1 : 1;
      last_fit = fits;
      if (fits) {
        lo = n;
        lo_size = trial.size();
        if (lo_size >= kFullEnough || kRoom - lo_size < lo_size / n)
          hi = std::min(hi, n + 1);
        frame->swap(trial);
        tally_fit_ = last_tally_;
      } else {
        hi = n;
        hi_size = trial.size();
      }
      // A straight line can keep missing on one side (sparse records,
      // then random ones): after two such trials, bisect.
      if (lo + 1 < hi)
        n = same_side >= 2 && lo != 0 && hi != left + 1
                ? lo + (hi - lo) / 2
                : NextTrial(lo, lo_size, hi, hi_size, left);
    }
    if (lo == 0)  // one record always fits: 56 + 4120 bytes stored
      return Status(HANDOFF_E_INTERNAL, "a single record does not fit a segment");
    HANDOFF_RETURN_IF_ERROR(KeepReferrers(at, end, &lo, frame));
    *count = guess_ = lo;
    return Status::Ok();
  }

  // A cut just after a source whose referrers follow it (GroupReferrers
  // put them there) would give its segment a dependent, and a segment
  // with dependents keeps every pinned copy it holds until they are
  // applied (CheckPinnedBound): cut apart often, ocr's working set
  // needed 27,000 pins against 215. So the referrers come along when
  // they fit (they are a few bytes each), else the cut moves before the
  // source; each costs one trial, only where a cut splits a group.
  Status KeepReferrers(size_t at, size_t end, size_t* n, std::string* frame) {
    const size_t left = std::min(end - at, kMaxRecordsPerFrame);
    size_t run = 0, first_source = at + *n;
    while (*n + run < left && Follows(at + *n + run, at)) {
      first_source = std::min(first_source, records_[at + *n + run].source);
      run++;
    }
    if (run == 0) return Status::Ok();
    std::string trial;
    bool fits = false;
    HANDOFF_RETURN_IF_ERROR(Try(at, *n + run, &trial, &fits));
    size_t take = *n + run;
    // Moving the cut back is worth a segment at least half as full.
    if (!fits && first_source > at && 2 * (first_source - at) >= *n) {
      take = first_source - at;
      HANDOFF_RETURN_IF_ERROR(Try(at, take, &trial, &fits));
    }
    if (fits) {
      *n = take;
      frame->swap(trial);
      tally_fit_ = last_tally_;
    }
    return Status::Ok();
  }

  // Whether record @i refers to a source at or after @at (in the segment
  // being cut).
  bool Follows(size_t i, size_t at) const {
    return records_[i].rec.kind == RecordKind::kSelfRef &&
           records_[i].source >= at && records_[i].source < i;
  }

  // The tally of the frame Cut returned.
  const FrameTally& tally_fit() const { return tally_fit_; }

 private:
  const Base& base_;
  const HandoffMode& mode_;
  const std::vector<Record>& plain_;
  const std::vector<RemoteRecord>& records_;
  Compressor compressor_;
  size_t guess_ = 16;
  FrameTally last_tally_;
  FrameTally tally_fit_;
};

// What the threads cutting parts share: a failure stops them all, and
// the segments cut so far are counted against kMaxSegments as they go.
struct CutShared {
  std::atomic<bool> stop{false};
  std::atomic<size_t> segments{0};
};

// Cuts records [@begin, @end) into segments.
void CutPartOnce(const Base& base, const HandoffMode& mode,
                 const std::vector<Record>& plain, size_t begin, size_t end,
                 const std::vector<RemoteRecord>& records, CutShared* shared,
                 PartCut* out) {
  SegmentCutter cutter(base, mode, plain, records);
  for (size_t at = begin; at < end;) {
    if (shared->stop.load()) {
      out->status = Status(HANDOFF_E_STATE, "another part failed");
      return;
    }
    if (shared->segments.fetch_add(1) >= kMaxSegments) {
      out->status = Status(HANDOFF_E_LENGTH_LIMIT,
                           "more than " + std::to_string(kMaxSegments) +
                               " segments");
      return;
    }
    size_t n = 0;
    std::string frame;
    out->status = cutter.Cut(at, end, &n, &frame);
    if (!out->status.ok()) return;
    out->frames.push_back(std::move(frame));
    out->counts.push_back(n);
    out->tally.plain_bytes += cutter.tally_fit().plain_bytes;
    out->tally.xor_chunks += cutter.tally_fit().xor_chunks;
    at += n;
  }
}

// CutPartOnce on a worker thread, where nothing may throw (workers.h):
// running out of memory is a status, as the C API's Guard makes it.
void CutPart(const Base& base, const HandoffMode& mode,
             const std::vector<Record>& plain, size_t begin, size_t end,
             const std::vector<RemoteRecord>& records, CutShared* shared,
             PartCut* out) {
  try {
    CutPartOnce(base, mode, plain, begin, end, records, shared, out);
  } catch (const std::bad_alloc&) {
    out->status = Status(HANDOFF_E_NO_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    out->status = Status(HANDOFF_E_INTERNAL, e.what());
  }
  if (!out->status.ok()) shared->stop.store(true);
}

// Where parts begin and end: every kRecordsPerPart records, each end
// moved past the references that follow a source of its part (as
// KeepReferrers does for a segment).
std::vector<size_t> PartBounds(const std::vector<RemoteRecord>& records) {
  std::vector<size_t> bounds{0};
  while (bounds.back() < records.size()) {
    const size_t begin = bounds.back();
    size_t end = std::min(records.size(), begin + kRecordsPerPart);
    while (end < records.size() &&
           records[end].rec.kind == RecordKind::kSelfRef &&
           records[end].source >= begin && records[end].source < end)
      end++;
    bounds.push_back(end);
  }
  return bounds;
}

// Cuts every part, @threads at a time.
Status CutParts(const Base& base, const HandoffMode& mode,
                const std::vector<Record>& plain,
                const std::vector<RemoteRecord>& records, unsigned threads,
                std::vector<PartCut>* parts) {
  const std::vector<size_t> bounds = PartBounds(records);
  parts->resize(bounds.size() - 1);
  std::atomic<size_t> next{0};
  CutShared shared;
  const unsigned n = static_cast<unsigned>(
      std::clamp<size_t>(parts->size(), 1, std::max(threads, 1u)));
  auto work = [&](unsigned) {
    for (size_t p; (p = next.fetch_add(1)) < parts->size();)
      CutPart(base, mode, plain, bounds[p], bounds[p + 1], records, &shared,
              &(*parts)[p]);
  };
  // Threads that could not start (a pids limit) leave their parts in the
  // queue: the threads that did, and this one, cut them, so the stream
  // does not depend on how many started.
  if (!RunParallel(n, work).ok()) work(0);
  // The first failure by part order: a later part may only have stopped
  // because of it.
  for (const PartCut& part : *parts)
    if (!part.status.ok() && part.status.code() != HANDOFF_E_STATE)
      return part.status;
  for (const PartCut& part : *parts) HANDOFF_RETURN_IF_ERROR(part.status);
  return Status::Ok();
}

// Gives @frame its number in the stream: parts are cut before they know
// where their segments fall.
void NumberFrame(std::string* frame, uint64_t seq) {
  uint8_t* p = reinterpret_cast<uint8_t*>(frame->data());
  FrameHeader h = ReadFrameHeaderUnchecked(p);
  h.frame_seq = seq;
  SerializeFrameHeader(h, p);
}

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
                    const std::vector<RemoteRecord>& records, unsigned threads,
                    PackedSegments* out) {
  std::vector<Record> plain;
  plain.reserve(records.size());
  for (const RemoteRecord& r : records) plain.push_back(r.rec);
  std::vector<PartCut> parts;
  HANDOFF_RETURN_IF_ERROR(
      CutParts(base, mode, plain, records, threads, &parts));
  std::vector<uint32_t> segment_of(records.size());
  size_t at = 0;
  for (PartCut& part : parts) {
    for (size_t f = 0; f < part.frames.size(); f++) {
      const uint32_t number = static_cast<uint32_t>(out->segments.size());
      if (number >= kMaxSegments)
        return Status(HANDOFF_E_LENGTH_LIMIT,
                      "more than " + std::to_string(kMaxSegments) + " segments");
      SegmentHeader h;
      h.number = number;
      h.frame_count = 1;
      std::vector<uint32_t> deps;
      for (size_t i = at; i < at + part.counts[f]; i++) {
        segment_of[i] = number;
        h.flags |= RegionFlag(base, records[i].rec.region);
        if (records[i].rec.kind == RecordKind::kSelfRef &&
            segment_of[records[i].source] != number)
          deps.push_back(segment_of[records[i].source]);
      }
      std::sort(deps.begin(), deps.end());
      deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
      NumberFrame(&part.frames[f], first_frame + number);
      std::string segment(kSegmentHeaderSize, '\0');
      SerializeSegmentHeader(h, reinterpret_cast<uint8_t*>(segment.data()));
      segment += part.frames[f];
      std::string().swap(part.frames[f]);
      out->segments.push_back(std::move(segment));
      out->deps.push_back(std::move(deps));
      at += part.counts[f];
    }
    out->tally.plain_bytes += part.tally.plain_bytes;
    out->tally.xor_chunks += part.tally.xor_chunks;
  }
  out->segment_of = std::move(segment_of);
  return Status::Ok();
}

}  // namespace handoff
