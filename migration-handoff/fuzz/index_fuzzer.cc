// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: a base index file with any contents, next to real
// region files, links, a FIFO and a directory, must open or be refused
// with an error code — never read outside the index or the files, follow
// a link or leave the directory. An index that opens must give accessors
// that agree with each other, verify without crashing, and a base that
// streams round-trip against: chunks encoded against it (references into
// its table, zero, repeated and new chunks) decode back to the same bytes,
// whatever its hashes and table say, since every match is byte-checked.
#include <xxhash.h>

#include <cstring>
#include <vector>

#include "fuzz_target.h"
#include "handoff.h"
#include "index_dir.h"
#include "index_mutator.h"

namespace handoff_fuzz {

std::vector<std::vector<uint8_t>> TargetSeeds() { return MakeSeedIndexes(); }

namespace {

constexpr size_t kChunk = HANDOFF_CHUNK_SIZE;
// Round trips cover this many regions and chunks per region.
constexpr size_t kTripRegions = 4;
constexpr uint64_t kTripChunks = 4;

void CheckAccessors(const HandoffBase* base) {
  const size_t regions = handoff_base_region_count(base);
  uint64_t chunks = 0, distinct = 0, sum = 0;
  FUZZ_CHECK(handoff_base_counts(base, &chunks, &distinct) == 0);
  for (size_t r = 0; r <= regions; r++) {
    HandoffRegionInfo info;
    const int rc = handoff_base_region_info(base, r, &info);
    const char* file = handoff_base_region_file(base, r);
    const auto* data = static_cast<const uint8_t*>(handoff_base_region_data(base, r));
    if (r == regions) {
      FUZZ_CHECK(rc != 0 && file == nullptr && data == nullptr);
      break;
    }
    FUZZ_CHECK(rc == 0 && file != nullptr && data != nullptr);
    FUZZ_CHECK(info.size % kChunk == 0 && info.size > 0);
    sum += info.size / kChunk;
    // The mapping covers the region: its last byte reads, and equals
    // what handoff_base_read copies.
    uint8_t last = 0;
    FUZZ_CHECK(handoff_base_read(base, r, info.size - 1, &last, 1) == 0);
    FUZZ_CHECK(last == data[info.size - 1]);
    FUZZ_CHECK(handoff_base_read(base, r, info.size, &last, 1) != 0);
  }
  // The distinct count is informational: the index's word, unchecked.
  FUZZ_CHECK(sum == chunks);
  uint8_t id[16];
  FUZZ_CHECK(handoff_base_id(base, id) == 0);
}

// The chunks a round trip submits to region @r: a chunk of the next
// region (a base reference, through the table), a zero chunk, a chunk
// the base does not hold, and that one again (a self reference).
void TripChunk(const HandoffBase* base, size_t r, size_t regions, uint64_t i,
               uint8_t* out) {
  switch (i) {
    case 0:
      std::memcpy(out, handoff_base_region_data(base, (r + 1) % regions), kChunk);
      break;
    case 1:
      std::memset(out, 0, kChunk);
      break;
    default:
      for (size_t k = 0; k < kChunk; k++) out[k] = static_cast<uint8_t>(k * 13 + r);
      break;
  }
}

void RoundTrip(const HandoffBase* base) {
  const size_t regions = handoff_base_region_count(base);
  HandoffEncoderConfig cfg{};
  cfg.struct_size = sizeof(cfg);
  handoff_encoder_config_default(&cfg);
  cfg.adaptive = 0;
  cfg.threads = 1;
  cfg.frame_bytes = 2 * kChunk;
  cfg.mode = {HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_XOR};
  HandoffEncoder* enc = nullptr;
  if (handoff_encoder_create(base, &cfg, &enc) != 0) return;
  std::vector<std::vector<uint8_t>> dest(regions);
  uint8_t chunk[kChunk];
  for (size_t r = 0; r < regions; r++) {
    HandoffRegionInfo info;
    FUZZ_CHECK(handoff_base_region_info(base, r, &info) == 0);
    const auto* data = static_cast<const uint8_t*>(handoff_base_region_data(base, r));
    dest[r].assign(data, data + info.size);
    for (uint64_t i = 0; r < kTripRegions && i < kTripChunks && i < info.size / kChunk; i++) {
      TripChunk(base, r, regions, i, chunk);
      FUZZ_CHECK(handoff_encoder_submit(enc, static_cast<uint32_t>(r), i, chunk) == 0);
    }
  }
  FUZZ_CHECK(handoff_encoder_finish(enc) == 0);
  std::vector<uint8_t> stream, buf(1 << 16);
  for (size_t n = 0;;) {
    FUZZ_CHECK(handoff_encoder_pull_wait(enc, buf.data(), buf.size(), &n) == 0);
    if (n == 0 && handoff_encoder_done(enc)) break;
    stream.insert(stream.end(), buf.begin(), buf.begin() + n);
  }
  handoff_encoder_free(enc);

  std::vector<void*> memory;
  for (auto& d : dest) memory.push_back(d.data());
  HandoffDecoder* dec = nullptr;
  FUZZ_CHECK(handoff_decoder_create(base, nullptr, memory.data(), &dec) == 0);
  FUZZ_CHECK(handoff_decoder_feed(dec, stream.data(), stream.size()) == 0);
  FUZZ_CHECK(handoff_decoder_finish(dec) == 0);
  handoff_decoder_free(dec);
  for (size_t r = 0; r < regions && r < kTripRegions; r++)
    for (uint64_t i = 0; i < kTripChunks && (i + 1) * kChunk <= dest[r].size(); i++) {
      TripChunk(base, r, regions, i, chunk);
      FUZZ_CHECK(std::memcmp(&dest[r][i * kChunk], chunk, kChunk) == 0);
    }
}

}  // namespace
}  // namespace handoff_fuzz

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size,
                                          size_t max_size, unsigned int seed) {
  return handoff_fuzz::MutateIndexInput(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const handoff_fuzz::IndexDir& dir = handoff_fuzz::GetIndexDir();
  handoff_fuzz::WriteIndexFile(data, size);
  HandoffBase* base = nullptr;
  if (handoff_base_open(dir.index_path.c_str(), &base) != 0) return 0;
  handoff_fuzz::CheckAccessors(base);
  // Verifying costs a 1 MiB read buffer however small the base: a
  // quarter of the inputs that open, chosen by their contents so that an
  // input always runs the same way.
  if (XXH3_64bits(data, size) % 4 == 0) handoff_base_verify(base);
  handoff_fuzz::RoundTrip(base);
  handoff_base_free(base);
  return 0;
}
