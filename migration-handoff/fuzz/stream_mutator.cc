// SPDX-License-Identifier: GPL-2.0-or-later
#include "stream_mutator.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "fuzz_base.h"
#include "fuzz_target.h"
#include "stream_model.h"

namespace handoff_fuzz {
namespace {

using handoff::Record;
using handoff::RecordKind;

// A mutated plaintext stays well inside -max_len and the format's limit.
constexpr size_t kMaxMutatedPlain = 256 * 1024;
// Compression levels the mutator picks: cheap ones. (lzma 9 alone would
// allocate hundreds of MiB per frame; the decoder's level check is reached
// by setting the level field without recompressing.)
constexpr int kMaxZstdLevel = 5, kMaxLzmaLevel = 2, kMaxZlibLevel = 9;

RecordKind AnyKind(Rng* rng) {
  RecordKind kind = RecordKind::kZero;
  handoff::RecordKindFromByte(
      static_cast<uint8_t>(1 + rng->Below(handoff::kRecordKindCount)), &kind);
  return kind;
}

// Makes a ZERO record a run now and then: short, long, or reaching past
// its region.
void MaybeZeroRun(Record* r, Rng* rng) {
  if (r->kind != RecordKind::kZero || !rng->OneIn(3)) return;
  r->flags = handoff::kRecordFlagRun;
  r->count = rng->OneIn(8) ? rng->Below(4) : 2 + rng->Below(1 << (1 + rng->Below(16)));
}

// Bytes for a DATA record the mutator makes up: a base chunk (so that
// BASE_REF, XOR and SAME decisions have something to agree with) or a
// pattern no chunk of the base holds.
const uint8_t* SomeChunk(Rng* rng) {
  static uint8_t pattern[HANDOFF_CHUNK_SIZE];
  if (pattern[0] == 0)
    for (size_t i = 0; i < sizeof(pattern); i++)
      pattern[i] = static_cast<uint8_t>(i * 7 + 1);
  const uint8_t* chunk = BaseChunk(rng->Below(BaseChunkCount()));
  return rng->OneIn(4) || chunk == nullptr ? pattern : chunk;
}

// A small region number: mostly the fuzz base's, sometimes one past them.
uint8_t SomeRegion(Rng* rng) {
  return rng->OneIn(8) ? static_cast<uint8_t>(rng->Next())
                       : static_cast<uint8_t>(rng->Below(3));
}

// A chunk index: mostly inside the fuzz geometry, sometimes anything.
uint64_t SomeIndex(Rng* rng, uint64_t old) {
  return rng->OneIn(3) ? InterestingValue(rng, old) : rng->Below(kChunks + 1);
}

// The DATA records of the decodable frames before frame @fi and of the
// first @upto records of frame @fi: what a self reference may name.
std::vector<Record> DataBefore(const StreamModel& m, size_t fi,
                               const std::vector<Record>& recs, size_t upto) {
  std::vector<Record> out;
  size_t rest_at;
  for (size_t i = 0; i < fi; i++)
    if (m.frames[i].decoded)
      for (const Record& r : ParseRecords(m.frames[i].plain, &rest_at))
        if (r.kind == RecordKind::kData) out.push_back(r);
  for (size_t i = 0; i < upto && i < recs.size(); i++)
    if (recs[i].kind == RecordKind::kData) out.push_back(recs[i]);
  return out;
}

void ChangeField(Record* r, const std::vector<Record>& recs, Rng* rng) {
  switch (rng->Below(8)) {
    case 0: r->region = SomeRegion(rng); break;
    case 1: r->index = SomeIndex(rng, r->index); break;
    case 2:
      r->seq = rng->OneIn(2) ? recs[rng->Below(recs.size())].seq
                             : InterestingValue(rng, r->seq);
      break;
    case 3:
      r->iteration = static_cast<uint32_t>(InterestingValue(rng, r->iteration));
      break;
    case 4: r->flags = static_cast<uint8_t>(rng->Below(4)); break;
    case 5: r->src_region = SomeRegion(rng); break;
    case 6: r->src_index = SomeIndex(rng, r->src_index); break;
    default:
      r->src_seq = rng->OneIn(2) ? recs[rng->Below(recs.size())].seq
                                 : InterestingValue(rng, r->src_seq);
      break;
  }
}

// A record to insert after @prev (null at the start of the frame).
Record NewRecord(const Record* prev, Rng* rng) {
  Record r;
  r.kind = AnyKind(rng);
  r.seq = prev ? prev->seq + 1 : 1 + rng->Below(64);
  r.iteration = prev ? prev->iteration : 0;
  if (r.kind == RecordKind::kIteration) return r;
  r.region = SomeRegion(rng);
  r.index = SomeIndex(rng, 0);
  r.data = SomeChunk(rng);
  r.flags = r.kind == RecordKind::kData && rng->OneIn(3) ? 1 : 0;
  MaybeZeroRun(&r, rng);
  r.src_region = SomeRegion(rng);
  r.src_index = SomeIndex(rng, 0);
  r.src_seq = r.seq > 1 ? 1 + rng->Below(r.seq - 1) : 0;
  return r;
}

// Changes the records of decodable frame @fi: a kind, a field, a record
// duplicated, dropped, swapped or inserted, a self reference pointed at
// an earlier DATA record, sequence numbers made increasing again, or the
// plaintext's raw bytes.
void MutateRecords(StreamModel* m, size_t fi, Rng* rng) {
  ModelFrame& f = m->frames[fi];
  size_t rest_at = 0;
  std::vector<Record> recs = ParseRecords(f.plain, &rest_at);
  std::string rest = f.plain.substr(rest_at);
  const size_t n = recs.size();
  const size_t i = n ? rng->Below(n) : 0;
  switch (n ? rng->Below(9) : 5) {
    case 0: {  // another kind, with a body that fits it
      Record& r = recs[i];
      r.kind = AnyKind(rng);
      if (r.kind == RecordKind::kData && r.data == nullptr) r.data = SomeChunk(rng);
      if (r.kind != RecordKind::kData) r.flags = 0;
      MaybeZeroRun(&r, rng);
      if (r.kind == RecordKind::kIteration && rng->OneIn(2)) {
        r.region = 0;
        r.index = 0;
      }
      break;
    }
    case 1:
      ChangeField(&recs[i], recs, rng);
      break;
    case 2: {  // duplicate, as is or as the next version of the chunk
      Record copy = recs[i];
      if (rng->OneIn(2)) copy.seq++;
      recs.insert(recs.begin() + i + 1, copy);
      break;
    }
    case 3:
      recs.erase(recs.begin() + i);
      if (rng->OneIn(4)) rest.clear();
      break;
    case 4:
      std::swap(recs[i], recs[rng->Below(n)]);
      break;
    case 5: {
      const size_t at = n ? rng->Below(n + 1) : 0;
      recs.insert(recs.begin() + at, NewRecord(at ? &recs[at - 1] : nullptr, rng));
      break;
    }
    case 6: {  // a self reference to an earlier DATA record
      const std::vector<Record> data = DataBefore(*m, fi, recs, i);
      if (data.empty()) break;
      const Record& src = data[rng->Below(data.size())];
      Record& r = recs[i];
      r.kind = RecordKind::kSelfRef;
      r.flags = 0;
      r.src_region = src.region;
      r.src_index = src.index;
      r.src_seq = src.seq;
      if (r.seq <= src.seq) r.seq = src.seq + 1;
      break;
    }
    case 7: {  // increasing again from the first record's number
      uint64_t seq = recs[0].seq;
      for (Record& r : recs) r.seq = seq++;
      break;
    }
    default: {  // raw bytes; the frame's record count follows what parses
      std::vector<uint8_t> buf(f.plain.begin(), f.plain.end());
      const size_t cap = std::min(kMaxMutatedPlain, buf.size() + 8192);
      buf.resize(cap);
      const size_t len = LLVMFuzzerMutate(buf.data(), f.plain.size(), cap);
      f.plain.assign(reinterpret_cast<const char*>(buf.data()), len);
      f.dirty = true;
      return;
    }
  }
  // DATA records point into f.plain: rebuild into another string first.
  std::string plain;
  handoff::RecordWriter writer(&plain);
  for (const Record& r : recs) {
    if (plain.size() > kMaxMutatedPlain) break;
    writer.Append(r);
  }
  plain += rest;
  f.plain = std::move(plain);
  f.dirty = true;
}

// Sequence numbers 1, 2, 3... over the whole stream in stream order, self
// references following their sources: what lets records duplicated or
// moved between frames be judged on what they say rather than on order.
void Resequence(StreamModel* m) {
  std::map<uint64_t, uint64_t> renumbered;
  uint64_t next = 1;
  for (ModelFrame& f : m->frames) {
    if (!f.decoded) continue;
    size_t rest_at = 0;
    std::vector<Record> recs = ParseRecords(f.plain, &rest_at);
    std::string plain;
    handoff::RecordWriter writer(&plain);
    for (Record& r : recs) {
      auto it = renumbered.find(r.src_seq);
      if (r.kind == RecordKind::kSelfRef && it != renumbered.end())
        r.src_seq = it->second;
      renumbered[r.seq] = next;
      r.seq = next++;
      writer.Append(r);
    }
    plain.append(f.plain, rest_at, std::string::npos);
    f.plain = std::move(plain);
    f.dirty = true;
  }
}

void RenumberFrames(StreamModel* m) {
  for (size_t i = 0; i < m->frames.size(); i++) m->frames[i].header.frame_seq = i;
}

// Another codec and level for a decodable frame; zstd may get a prefix
// list of the base chunks at its DATA records' places, as the encoder
// makes them.
void Recode(ModelFrame* f, Rng* rng) {
  handoff::FrameHeader& h = f->header;
  h.codec = static_cast<uint8_t>(rng->Below(4));
  h.flags &= static_cast<uint16_t>(~handoff::kFrameFlagPrefix);
  f->prefix.clear();
  switch (h.codec) {
    case HANDOFF_CODEC_ZSTD: h.level = static_cast<int8_t>(1 + rng->Below(kMaxZstdLevel)); break;
    case HANDOFF_CODEC_LZMA: h.level = static_cast<int8_t>(rng->Below(kMaxLzmaLevel + 1)); break;
    case HANDOFF_CODEC_ZLIB: h.level = static_cast<int8_t>(1 + rng->Below(kMaxZlibLevel)); break;
    default: h.level = 0; break;
  }
  if (h.codec == HANDOFF_CODEC_ZSTD && rng->OneIn(2)) {
    size_t rest_at;
    for (const Record& r : ParseRecords(f->plain, &rest_at)) {
      uint64_t g;
      if (r.kind == RecordKind::kData && BaseGlobal(r.region, r.index, &g))
        f->prefix.push_back(g);
    }
    if (f->prefix.empty()) f->prefix.push_back(rng->Below(BaseChunkCount()));
    h.flags |= handoff::kFrameFlagPrefix;
  }
  f->dirty = true;
}

// One change to the model: mostly inside a frame's records (with
// kRecords), otherwise to frames as a whole (order, numbers, codec, end
// record).
void MutateModel(StreamModel* m, StreamMutations what, Rng* rng) {
  std::vector<size_t> decoded;
  for (size_t i = 0; i < m->frames.size(); i++)
    if (m->frames[i].decoded) decoded.push_back(i);
  const size_t n = m->frames.size();
  const size_t i = rng->Below(n), j = rng->Below(n);
  const uint64_t op =
      what == StreamMutations::kRecords ? rng->Below(16) : 8 + rng->Below(8);
  if (op < 8 && !decoded.empty()) {
    MutateRecords(m, decoded[rng->Below(decoded.size())], rng);
    if (rng->OneIn(4)) Resequence(m);
    return;
  }
  switch (op) {
    case 8:
      if (n > 1) m->frames.erase(m->frames.begin() + i);
      if (rng->OneIn(4)) RenumberFrames(m);
      break;
    case 9: {
      ModelFrame copy = m->frames[i];
      m->frames.insert(m->frames.begin() + j, std::move(copy));
      if (!rng->OneIn(4)) RenumberFrames(m);
      if (rng->OneIn(2)) Resequence(m);
      break;
    }
    case 10:
      std::swap(m->frames[i], m->frames[j]);
      if (rng->OneIn(2)) RenumberFrames(m);
      break;
    case 11:
      m->frames[i].header.frame_seq =
          InterestingValue(rng, m->frames[i].header.frame_seq);
      break;
    case 12:
      if (m->frames[i].decoded) Recode(&m->frames[i], rng);
      break;
    case 13:  // a level or flags the codec does not have, payload unchanged
      if (rng->OneIn(2))
        m->frames[i].header.level = static_cast<int8_t>(rng->Next());
      else
        m->frames[i].header.flags ^= static_cast<uint16_t>(1u << rng->Below(16));
      break;
    case 14:  // a prefix list entry, possibly beyond the base
      if (!m->frames[i].prefix.empty() && m->frames[i].decoded) {
        uint64_t& g = m->frames[i].prefix[rng->Below(m->frames[i].prefix.size())];
        g = InterestingValue(rng, g);
        m->frames[i].dirty = true;
      }
      break;
    default:
      if (rng->OneIn(4)) {
        m->has_end = !m->has_end;
      } else {
        Resequence(m);
        RenumberFrames(m);
      }
      break;
  }
}

}  // namespace

size_t MutateStreamInput(uint8_t* data, size_t size, size_t max_size,
                         unsigned int seed, StreamMutations what) {
  Rng rng(seed);
  StreamModel m;
  if (size < 2 || rng.OneIn(3) ||
      !ParseStream(data + 1, size - 1, what == StreamMutations::kRecords, &m) ||
      m.frames.empty())
    return LLVMFuzzerMutate(data, size, max_size);
  for (uint64_t k = 1 + rng.Below(3); k > 0; k--) MutateModel(&m, what, &rng);
  const std::string s = SerializeStream(&m);
  if (s.size() + 1 > max_size) return LLVMFuzzerMutate(data, size, max_size);
  if (rng.OneIn(8)) data[0] = static_cast<uint8_t>(rng.Next());  // delivery
  std::memcpy(data + 1, s.data(), s.size());
  return s.size() + 1;
}

}  // namespace handoff_fuzz
