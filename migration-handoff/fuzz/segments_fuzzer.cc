// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: any byte string as a segmented stream (version 3),
// read two ways: fed whole, and as a table part (checked against its own
// root) followed by its segments in a random order, each on demand after
// its missing dependencies. Never a crash, hang, leak or out-of-bounds
// access; no writer call for a segment refused for its SHA-256, as a
// duplicate or for a missing dependency; and when the file is exactly
// table part plus segments, both ways succeed or fail together and give
// the same image.
//
// Input: a selector byte, then the stream. Bit 7 mends the SHA-256 of
// every segment and the table's checksum after blind mutations, so that
// they reach the frames and records; the other bits seed the order.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "byte_io.h"
#include "fuzz_base.h"
#include "fuzz_target.h"
#include "handoff.h"
#include "segment_table.h"

namespace handoff_fuzz {

std::vector<std::vector<uint8_t>> TargetSeeds() {
  return {
      StreamInput(0x80, MakeSegmentedSeedStream(HANDOFF_CODEC_NONE, 0,
                                                HANDOFF_DELTA_NONE)),
      StreamInput(0x01, MakeSegmentedSeedStream(HANDOFF_CODEC_ZSTD, 1,
                                                HANDOFF_DELTA_XOR)),
      StreamInput(0x85, MakeSegmentedSeedStream(HANDOFF_CODEC_ZLIB, 6,
                                                HANDOFF_DELTA_NONE)),
  };
}

namespace {

// Recomputes what blind mutations break first: each segment's SHA-256 in
// the table (where the file holds the segment) and the table checksum.
void RepairSegmented(std::vector<uint8_t>* s) {
  uint64_t table_len = 0;
  size_t needed = 0;
  uint8_t* p = s->data();
  if (!handoff::SegmentTableLength(p, s->size(), &table_len, &needed).ok() ||
      table_len > s->size())
    return;
  const size_t entries = handoff::DeclaredHeaderLength(p) + handoff::kTableFixedSize;
  const uint32_t count = handoff::LoadLe<uint32_t>(p + entries - handoff::kTableFixedSize + 4);
  for (uint32_t k = 0; k < count; k++) {
    uint8_t* e = p + entries + size_t{k} * handoff::kSegmentEntrySize;
    const uint64_t at = table_len + handoff::LoadLe<uint64_t>(e);
    const uint32_t length = handoff::LoadLe<uint32_t>(e + 8);
    handoff::Sha256Digest d;
    if (at > s->size() || length > s->size() - at ||
        !handoff::Sha256(p + at, length, &d).ok())
      continue;
    std::memcpy(e + 16, d.data(), d.size());
  }
  const size_t sum_at = table_len - handoff::kTableChecksumSize;
  handoff::StoreLe<uint64_t>(p + sum_at, handoff::Checksum64(p, sum_at));
}

struct Destination {
  std::vector<uint8_t> mem, disk;
  uint64_t writes = 0;
};

int Write(void* opaque, uint32_t region, uint64_t index, const void* data) {
  auto* d = static_cast<Destination*>(opaque);
  d->writes++;
  std::vector<uint8_t>& r = region == 0 ? d->mem : d->disk;
  FUZZ_CHECK((index + 1) * HANDOFF_CHUNK_SIZE <= r.size());
  std::memcpy(&r[index * HANDOFF_CHUNK_SIZE], data, HANDOFF_CHUNK_SIZE);
  return 0;
}

int NoRead(void*, uint32_t, uint64_t, void*) {
  FUZZ_CHECK(!"a segmented decoder read the destination");
  return -1;
}

HandoffDecoder* OpenDecoder(Destination* d) {
  const FuzzBase& fb = GetFuzzBase();
  d->mem = fb.mem;
  d->disk = fb.disk;
  HandoffWriter w{};
  w.struct_size = sizeof(w);
  w.opaque = d;
  w.write_chunk = Write;
  w.read_chunk = NoRead;
  HandoffDecoder* dec = nullptr;
  FUZZ_CHECK(handoff_decoder_create(fb.base, &w, nullptr, &dec) == 0);
  return dec;
}

int Finish(HandoffDecoder* dec) {
  const int rc = handoff_decoder_finish(dec);
  handoff_decoder_free(dec);
  return rc;
}

// Applies segment @want after its missing dependencies (an explicit
// stack: dependencies name earlier segments, so it ends). 0 or the first
// failure; refusals that write nothing are checked to write nothing.
int ApplyOnDemand(HandoffDecoder* dec, Destination* d,
                  const HandoffSegmentTable* t, const uint8_t* stream,
                  size_t table_len, std::vector<uint8_t>* applied,
                  uint32_t want) {
  std::vector<uint32_t> stack{want}, deps(65535);
  while (!stack.empty()) {
    const uint32_t k = stack.back();
    uint64_t offset = 0;
    uint32_t length = 0;
    size_t dep_count = 0;
    FUZZ_CHECK(handoff_segment_table_entry(t, k, &offset, &length, nullptr,
                                           deps.data(), deps.size(),
                                           &dep_count) == 0);
    uint32_t missing = UINT32_MAX;
    for (size_t i = 0; i < dep_count && missing == UINT32_MAX; i++)
      if (!(*applied)[deps[i]]) missing = deps[i];
    const uint64_t writes = d->writes;
    const int rc = handoff_decoder_apply_segment(
        dec, k, stream + table_len + offset, length);
    if (rc == HANDOFF_E_SEGMENT_DIGEST || rc == HANDOFF_E_SEGMENT_DUPLICATE ||
        rc == HANDOFF_E_SEGMENT_DEPENDENCY)
      FUZZ_CHECK(d->writes == writes);
    if (missing != UINT32_MAX && rc == HANDOFF_E_SEGMENT_DEPENDENCY) {
      stack.push_back(missing);
      continue;
    }
    stack.pop_back();
    if (rc != 0 && rc != HANDOFF_E_SEGMENT_DUPLICATE) return rc;
    (*applied)[k] = 1;
  }
  return 0;
}

int DecodeBySegments(const std::vector<uint8_t>& s, uint8_t how,
                     Destination* d, bool* exact) {
  *exact = false;
  uint64_t table_len = 0;
  if (handoff_segment_table_length(s.data(), s.size(), &table_len) != 0 ||
      table_len > s.size())
    return -1;
  HandoffSegmentTable* t = nullptr;
  if (handoff_segment_table_open(s.data(), table_len, nullptr, &t) != 0)
    return -1;
  const uint32_t n = handoff_segment_table_count(t);
  uint64_t end = table_len;
  for (uint32_t k = 0; k < n; k++) {
    uint32_t length = 0;
    handoff_segment_table_entry(t, k, nullptr, &length, nullptr, nullptr, 0,
                                nullptr);
    end += length;
  }
  *exact = end == s.size();
  if (!*exact) {
    handoff_segment_table_free(t);
    return -1;
  }
  handoff::Sha256Digest root;
  FUZZ_CHECK(handoff::Sha256(s.data(), table_len, &root).ok());
  HandoffDecoder* dec = OpenDecoder(d);
  int rc = handoff_decoder_load_table(dec, s.data(), table_len, root.data());
  std::vector<uint32_t> order(n);
  for (uint32_t k = 0; k < n; k++) order[k] = k;
  Rng rng(how);
  for (uint32_t k = n; k > 1; k--) std::swap(order[k - 1], order[rng.Below(k)]);
  std::vector<uint8_t> applied(n, 0);
  for (uint32_t k = 0; k < n && rc == 0; k++)
    rc = ApplyOnDemand(dec, d, t, s.data(), table_len, &applied, order[k]);
  handoff_segment_table_free(t);
  const int finished = Finish(dec);
  return rc != 0 ? rc : finished;
}

}  // namespace
}  // namespace handoff_fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using handoff_fuzz::Destination;
  if (size < 1) return 0;
  const uint8_t how = data[0];
  std::vector<uint8_t> stream(data + 1, data + size);
  if (how & 0x80) handoff_fuzz::RepairSegmented(&stream);
  Destination fed, applied;
  HandoffDecoder* dec = handoff_fuzz::OpenDecoder(&fed);
  int rc_fed = handoff_decoder_feed(dec, stream.data(), stream.size());
  const int finished = handoff_fuzz::Finish(dec);
  if (rc_fed == 0) rc_fed = finished;
  bool exact = false;
  const int rc_applied =
      handoff_fuzz::DecodeBySegments(stream, how, &applied, &exact);
  if (!exact) return 0;
  FUZZ_CHECK((rc_fed == 0) == (rc_applied == 0));
  if (rc_fed == 0)
    FUZZ_CHECK(fed.mem == applied.mem && fed.disk == applied.disk);
  return 0;
}
