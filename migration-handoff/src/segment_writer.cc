// SPDX-License-Identifier: GPL-2.0-or-later
#include "segment_writer.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <unordered_set>

#include "chunk.h"
#include "compression_policy.h"
#include "dedup.h"
#include "workers.h"

namespace handoff {

Status SegmentWriter::Create(const Base* base,
                             const HandoffEncoderConfig& config,
                             std::unique_ptr<SegmentWriter>* out) {
  HANDOFF_RETURN_IF_ERROR(CheckCompression(config));
  if (config.order_count != 0 && config.order == nullptr)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "order_count without order");
  std::unique_ptr<SegmentWriter> w(new SegmentWriter(base, config));
  if (w->config_.frame_bytes == 0) w->config_.frame_bytes = 256 * 1024;
  if (w->config_.frame_bytes < kChunkSize ||
      w->config_.frame_bytes > kMaxPlainLength / 2)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "frame_bytes must be within 4096..4 MiB");
  const Geometry& g = base->geometry();
  for (size_t i = 0; i < config.order_count; i++) {
    const HandoffChunkRef& c = config.order[i];
    if (!g.Contains(c.region, c.chunk_index))
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "order entry " + std::to_string(i) + ": chunk " +
                        std::to_string(c.chunk_index) + " of region " +
                        std::to_string(c.region) + " outside the geometry");
    w->order_.push_back(g.Global(c.region, c.chunk_index));
  }
  // The pointer is the caller's: it is not kept past this call.
  w->config_.order = nullptr;
  w->config_.order_count = 0;
  w->state_.assign(g.total_chunks(), kUnseen);
  *out = std::move(w);
  return Status::Ok();
}

// Marks chunks [@first, @first + @count) of @region as given, each once.
Status SegmentWriter::Claim(uint32_t region, uint64_t first, uint64_t count) {
  if (finish_attempted_)
    return Status(HANDOFF_E_STATE, "encoder already finished");
  const Geometry& g = base_->geometry();
  if (count == 0 || !g.Contains(region, first) ||
      count - 1 > g.regions()[region].chunks() - 1 - first)
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunks " + std::to_string(first) + "+" +
                      std::to_string(count) + " of region " +
                      std::to_string(region) + " outside the geometry");
  const uint64_t global = g.Global(region, first);
  for (uint64_t i = 0; i < count; i++)
    if (state_[global + i] != kUnseen)
      return Status(HANDOFF_E_DUPLICATE_CHUNK,
                    "chunk " + std::to_string(first + i) + " of region " +
                        std::to_string(region) +
                        " given twice: a segmented stream has one record "
                        "per chunk");
  return Status::Ok();
}

Status SegmentWriter::Submit(uint32_t region, uint64_t index,
                             const uint8_t* data) {
  HANDOFF_RETURN_IF_ERROR(Claim(region, index, 1));
  const uint64_t global = base_->geometry().Global(region, index);
  if (std::memcmp(data, base_->Chunk(region, index), kChunkSize) == 0) {
    state_[global] = kSame;
    chunks_[HANDOFF_REC_SAME]++;
  } else if (IsZeroChunk(data)) {
    state_[global] = kZero;
    zero_runs_.push_back({global, 1, RecordKind::kZero, 0, 0});
    chunks_[HANDOFF_REC_ZERO]++;
  } else {
    state_[global] = kHeld;
    held_at_[global] = held_.size();
    held_.append(reinterpret_cast<const char*>(data), kChunkSize);
  }
  return Status::Ok();
}

// The order of submission does not matter here: the layout is decided at
// Finish, so random_order has nothing to shuffle.
Status SegmentWriter::SubmitMany(uint32_t region, const uint8_t* region_data,
                                 const uint64_t* indexes, size_t count) {
  if (count == 0) return Status::Ok();
  if (region_data == nullptr || indexes == nullptr)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "null region data or indexes");
  for (size_t i = 0; i < count; i++)
    HANDOFF_RETURN_IF_ERROR(
        Submit(region, indexes[i], region_data + (indexes[i] << kChunkShift)));
  return Status::Ok();
}

Status SegmentWriter::SubmitZeroRun(uint32_t region, uint64_t first,
                                    uint64_t count) {
  if (count == 0) return Status::Ok();
  HANDOFF_RETURN_IF_ERROR(Claim(region, first, count));
  const uint64_t global = base_->geometry().Global(region, first);
  std::fill_n(state_.begin() + global, count, kZero);
  zero_runs_.push_back({global, count, RecordKind::kZero, 0, 0});
  chunks_[HANDOFF_REC_ZERO_RUN] += count;
  return Status::Ok();
}

// The caller's order first, then every other held chunk by address,
// memory regions before disks.
std::vector<uint64_t> SegmentWriter::RemoteOrder() const {
  const Geometry& g = base_->geometry();
  std::vector<uint8_t> placed(g.total_chunks(), 0);
  std::vector<uint64_t> order;
  order.reserve(held_at_.size());
  for (uint64_t global : order_) {
    if (state_[global] != kHeld || placed[global]) continue;
    placed[global] = 1;
    order.push_back(global);
  }
  for (HandoffRegionKind kind : {HANDOFF_REGION_MEMORY, HANDOFF_REGION_DISK})
    for (size_t r = 0; r < g.region_count(); r++) {
      if (g.regions()[r].kind != kind) continue;
      const uint64_t first = g.first_chunk(r);
      for (uint64_t i = 0; i < g.regions()[r].chunks(); i++)
        if (state_[first + i] == kHeld && !placed[first + i])
          order.push_back(first + i);
    }
  return order;
}

void SegmentWriter::Classify(const std::vector<uint64_t>& order,
                             std::vector<RemoteRecord>* remote,
                             std::vector<LocalRecord>* local) {
  const Geometry& g = base_->geometry();
  ChunkClassifier classifier(base_, config_.dedup != 0);
  uint64_t seq = 0;
  for (uint64_t global : order) {
    uint32_t region;
    uint64_t index;
    g.Locate(global, &region, &index);
    const uint8_t* data =
        reinterpret_cast<const uint8_t*>(held_.data()) + held_at_[global];
    const ChunkChoice choice = classifier.Classify(region, index, data);
    classifier.Commit(choice, ++seq);
    if (choice.kind == RecordKind::kBaseRef) {
      state_[global] = kBaseRef;
      local->push_back({global, 1, RecordKind::kBaseRef,
                        static_cast<uint8_t>(choice.src_region),
                        choice.src_index});
      chunks_[HANDOFF_REC_BASE_REF]++;
      continue;
    }
    RemoteRecord r;
    r.rec.kind = choice.kind;  // kData or kSelfRef: held chunks are not zero
    r.rec.region = static_cast<uint8_t>(region);
    r.rec.index = index;
    r.rec.seq = seq;
    r.rec.src_region = static_cast<uint8_t>(choice.src_region);
    r.rec.src_index = choice.src_index;
    r.rec.src_seq = choice.src_seq;
    r.rec.data = data;
    chunks_[ApiStatsSlot(choice.kind)]++;
    remote->push_back(r);
  }
}

// Moves every self reference the caller's order does not list to just
// behind its source's DATA (behind the references already there), the
// rest keeping their order, and numbers the records again in the new
// order. A source and its unlisted referrers then share a segment (the
// packer does not cut between them: KeepReferrers, PartBounds), so a
// decoder holds a pinned copy only while that segment is applied, not
// until the stream's end: the referrers of
// a working-set chunk would otherwise follow it by address, and their
// sources, up to every one of them, be held at once (ocr's overlay:
// 48,928, some 200 MiB). A reference pulled forward is a few bytes of
// stream and one more chunk placed early. A listed reference keeps its
// place: the order says when the VM wants it, and the pins it costs are
// bounded by the order's length (CheckPinnedBound has the last word).
void SegmentWriter::GroupReferrers(std::vector<RemoteRecord>* remote) const {
  std::unordered_set<uint64_t> listed(order_.begin(), order_.end());
  const Geometry& g = base_->geometry();
  auto unlisted = [&](const Record& rec) {
    return rec.kind == RecordKind::kSelfRef &&
           listed.count(g.Global(rec.region, rec.index)) == 0;
  };
  std::unordered_map<uint64_t, size_t> data_at;  // seq -> position
  std::vector<std::vector<size_t>> followers(remote->size());
  for (size_t i = 0; i < remote->size(); i++) {
    const Record& rec = (*remote)[i].rec;
    if (rec.kind == RecordKind::kData)
      data_at[rec.seq] = i;
    else if (unlisted(rec))
      followers[data_at.at(rec.src_seq)].push_back(i);
  }
  std::vector<RemoteRecord> grouped;
  grouped.reserve(remote->size());
  std::unordered_map<uint64_t, uint64_t> new_seq;  // old DATA seq -> new
  auto emit = [&](const RemoteRecord& r) {
    grouped.push_back(r);
    Record& rec = grouped.back().rec;
    if (rec.kind == RecordKind::kData)
      new_seq[rec.seq] = grouped.size();
    else
      rec.src_seq = new_seq.at(rec.src_seq);
    rec.seq = grouped.size();
  };
  for (size_t i = 0; i < remote->size(); i++) {
    if (unlisted((*remote)[i].rec)) continue;  // emitted with its source
    emit((*remote)[i]);
    for (size_t f : followers[i]) emit((*remote)[f]);
  }
  *remote = std::move(grouped);
}

// Flags every DATA a self reference names as PINNED and tells each
// reference where its source is.
void SegmentWriter::PinSources(std::vector<RemoteRecord>* remote) const {
  std::unordered_map<uint64_t, size_t> data_at;  // seq -> position
  for (size_t i = 0; i < remote->size(); i++) {
    Record& rec = (*remote)[i].rec;
    if (rec.kind == RecordKind::kData) {
      data_at[rec.seq] = i;
      continue;
    }
    const size_t source = data_at.at(rec.src_seq);
    (*remote)[i].source = source;
    (*remote)[source].rec.flags |= kRecordFlagPinned;
  }
}

// The most a decoder can hold for pins, whatever order it applies the
// segments in (segment_records.cc): a segment's pinned copies stay until
// it and every segment depending on it are applied. At worst every
// segment with dependents is applied first, then the one without with
// the most pins is applied. Refused when that passes the decoder's limit.
Status SegmentWriter::CheckPinnedBound(const std::vector<RemoteRecord>& remote,
                                       const PackedSegments& packed) const {
  const size_t n = packed.segments.size();
  std::vector<uint64_t> pins(n, 0);
  std::vector<uint8_t> has_dependents(n, 0);
  for (size_t i = 0; i < remote.size(); i++)
    if (remote[i].rec.flags & kRecordFlagPinned) pins[packed.segment_of[i]]++;
  for (const std::vector<uint32_t>& deps : packed.deps)
    for (uint32_t d : deps) has_dependents[d] = 1;
  uint64_t kept = 0, transient = 0;
  for (size_t s = 0; s < n; s++) {
    if (has_dependents[s])
      kept += pins[s];
    else
      transient = std::max(transient, pins[s]);
  }
  const uint64_t worst = kept + transient;
  if (worst * kPinCost > HANDOFF_DECODER_MAX_HELD_BYTES)
    return Status(HANDOFF_E_LENGTH_LIMIT,
                  std::to_string(worst) +
                      " pinned data versions could be held at once: a "
                      "decoder would hold more than " +
                      std::to_string(HANDOFF_DECODER_MAX_HELD_BYTES >> 20) +
                      " MiB for them");
  return Status::Ok();
}

Status SegmentWriter::Finish() {
  if (finish_attempted_)
    return Status(HANDOFF_E_STATE, finished_ ? "encoder already finished"
                                             : "an earlier finish failed");
  finish_attempted_ = true;
  // An exception (out of memory, mostly) must reach a puller too, not
  // only this caller through the C API's Guard: else it waits for ever.
  Status s;
  try {
    s = Lay();
  } catch (const std::bad_alloc&) {
    s = Status(HANDOFF_E_NO_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    s = Status(HANDOFF_E_INTERNAL, e.what());
  }
  if (!s.ok()) {
    failure_ = s;
    failed_.store(true);
  }
  return s;
}

// Finish's work, once: the records classified, grouped and packed, the
// table written.
Status SegmentWriter::Lay() {
  std::vector<RemoteRecord> remote;
  std::vector<LocalRecord> local = zero_runs_;
  Classify(RemoteOrder(), &remote, &local);
  GroupReferrers(&remote);
  PinSources(&remote);
  SegmentTable table;
  table.header.version = kSegmentedStreamVersion;
  std::memcpy(table.header.base_id, base_->id(), 16);
  table.header.geometry = base_->geometry();
  HANDOFF_RETURN_IF_ERROR(
      BuildLocalFrames(std::move(local), remote.size() + 1, &table));
  PackedSegments packed;
  const unsigned threads = config_.threads
                              ? std::min(config_.threads, kMaxThreads)
                              : DefaultWorkers();
  HANDOFF_RETURN_IF_ERROR(PackSegments(*base_, config_.mode,
                                       table.local_frames, remote, threads,
                                       &packed));
  HANDOFF_RETURN_IF_ERROR(CheckPinnedBound(remote, packed));
  HANDOFF_RETURN_IF_ERROR(BuildTable(packed, &table));
  BuildIndex(remote, packed, &table);
  HANDOFF_RETURN_IF_ERROR(SerializeSegmentTable(table, &stream_));
  HANDOFF_RETURN_IF_ERROR(Sha256(stream_.data(), stream_.size(), &root_));
  for (const std::string& s : packed.segments) stream_ += s;
  frames_ += packed.segments.size();
  plain_bytes_ += packed.tally.plain_bytes;
  xor_chunks_ += packed.tally.xor_chunks;
  held_.clear();
  held_.shrink_to_fit();
  held_at_.clear();
  finished_ = true;
  return Status::Ok();
}

// Sorted by address, zeros merged into runs within a region, then cut
// into frames of about frame_bytes of plaintext.
Status SegmentWriter::BuildLocalFrames(std::vector<LocalRecord> local,
                                       uint64_t seq, SegmentTable* table) {
  const Geometry& g = base_->geometry();
  std::sort(local.begin(), local.end(),
            [](const LocalRecord& a, const LocalRecord& b) {
              return a.global < b.global;
            });
  std::vector<Record> records;
  for (const LocalRecord& l : local) {
    uint32_t region;
    uint64_t index;
    g.Locate(l.global, &region, &index);
    Record* last = records.empty() ? nullptr : &records.back();
    if (l.kind == RecordKind::kZero && last != nullptr &&
        last->kind == RecordKind::kZero && last->region == region &&
        last->index + last->count == index) {
      last->count += l.count;
      last->flags = kRecordFlagRun;
      continue;
    }
    Record rec;
    rec.kind = l.kind;
    rec.region = static_cast<uint8_t>(region);
    rec.index = index;
    rec.count = l.count;
    rec.flags = l.count > 1 ? kRecordFlagRun : 0;
    rec.src_region = l.src_region;
    rec.src_index = l.src_index;
    records.push_back(rec);
  }
  Compressor compressor;
  std::string frame;
  for (size_t at = 0; at < records.size();) {
    size_t n = 0, plain = 0;
    while (at + n < records.size() && plain < config_.frame_bytes) {
      records[at + n].seq = seq++;
      plain += kRecordHeaderSize +
               RecordBodySize(records[at + n].kind, records[at + n].flags);
      n++;
    }
    FrameTally tally;
    HANDOFF_RETURN_IF_ERROR(EncodeRecordFrame(*base_, &compressor, config_.mode,
                                              table->local_frames,
                                              records.data() + at, n, &frame,
                                              &tally));
    table->local += frame;
    table->local_frames++;
    frames_++;
    plain_bytes_ += tally.plain_bytes;
    xor_chunks_ += tally.xor_chunks;
    at += n;
    if (table->local.size() > kMaxLocalBytes)
      return Status(HANDOFF_E_LENGTH_LIMIT,
                    "local records take more than " +
                        std::to_string(kMaxLocalBytes) + " bytes");
  }
  return Status::Ok();
}

// Entries in segment order: contiguous offsets, SHA-256 of the stored
// bytes, dependencies flattened into the array.
Status SegmentWriter::BuildTable(const PackedSegments& packed,
                                 SegmentTable* table) {
  uint64_t offset = 0;
  for (size_t k = 0; k < packed.segments.size(); k++) {
    const std::string& bytes = packed.segments[k];
    const std::vector<uint32_t>& deps = packed.deps[k];
    if (table->deps.size() > 0xFFFF || deps.size() > 0xFFFF ||
        table->deps.size() + deps.size() > kMaxDependencies)
      return Status(HANDOFF_E_LENGTH_LIMIT,
                    "segment " + std::to_string(k) +
                        ": the dependency array is full (a u16 start and "
                        "count per segment)");
    SegmentEntry e;
    e.offset = offset;
    e.length = static_cast<uint32_t>(bytes.size());
    e.dep_first = static_cast<uint16_t>(table->deps.size());
    e.dep_count = static_cast<uint16_t>(deps.size());
    HANDOFF_RETURN_IF_ERROR(Sha256(bytes.data(), bytes.size(), &e.sha256));
    table->deps.insert(table->deps.end(), deps.begin(), deps.end());
    table->entries.push_back(e);
    offset += bytes.size();
  }
  return Status::Ok();
}

void SegmentWriter::BuildIndex(const std::vector<RemoteRecord>& remote,
                               const PackedSegments& packed,
                               SegmentTable* table) const {
  const Geometry& g = base_->geometry();
  std::unordered_map<uint64_t, uint32_t> segment_of;  // global -> segment
  for (size_t i = 0; i < remote.size(); i++)
    segment_of[g.Global(remote[i].rec.region, remote[i].rec.index)] =
        packed.segment_of[i];
  for (size_t r = 0; r < g.region_count(); r++) {
    for (uint64_t i = 0; i < g.regions()[r].chunks(); i++) {
      const uint64_t global = g.first_chunk(r) + i;
      IndexExtent e;
      e.region = static_cast<uint8_t>(r);
      e.first = i;
      e.count = 1;
      if (state_[global] == kHeld) {
        e.place = HANDOFF_CHUNK_REMOTE;
        e.segment = segment_of.at(global);
      } else if (state_[global] != kZero && state_[global] != kBaseRef) {
        continue;  // no record: the base's bytes
      }
      AddToIndex(e, &table->index);
    }
  }
}

Status SegmentWriter::Pull(uint8_t* buf, size_t cap, size_t* produced) {
  // A puller waiting for the end learns that it never comes.
  if (failed_.load()) {
    *produced = 0;
    return failure_;
  }
  const size_t n = finished_ ? std::min(cap, stream_.size() - pulled_) : 0;
  if (n != 0) std::memcpy(buf, stream_.data() + pulled_, n);
  pulled_ += n;
  *produced = n;
  return Status::Ok();
}

Status SegmentWriter::Root(uint8_t out[kSha256Size]) const {
  if (!finished_)
    return Status(HANDOFF_E_STATE, "the root is known once finished");
  std::memcpy(out, root_.data(), kSha256Size);
  return Status::Ok();
}

void SegmentWriter::Stats(HandoffEncoderStats* s) const {
  std::memset(s, 0, sizeof(*s));
  uint64_t input = 0;
  for (int k = 0; k < HANDOFF_REC_KINDS; k++) {
    s->chunks[k] = chunks_[k];
    // As the version 2 encoder counts: zero runs were declared, not read.
    if (k != HANDOFF_REC_ZERO_RUN) input += chunks_[k];
  }
  s->input_bytes = input * kChunkSize;
  s->mode = config_.mode;
  if (!finished_) return;  // the rest is known at finish
  s->plain_bytes = plain_bytes_;
  s->xor_chunks = xor_chunks_;
  s->output_bytes = stream_.size();
  s->frames = frames_;
  s->ratio = s->input_bytes ? static_cast<double>(s->output_bytes) /
                                  static_cast<double>(s->input_bytes)
                            : 0;
  s->pending_bytes = stream_.size() - pulled_;
}

}  // namespace handoff
