// SPDX-License-Identifier: GPL-2.0-or-later
#include "fuzz_base.h"

#include <cstring>

namespace handoff_fuzz {
namespace {

void Fill(uint8_t* p, uint64_t tag, bool text) {
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < HANDOFF_CHUNK_SIZE; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = text ? static_cast<uint8_t>("abcdefgh \n"[x % 10])
                : static_cast<uint8_t>(x);
  }
}

// Every byte of a finished encoder's stream.
std::vector<uint8_t> PullAll(HandoffEncoder* enc) {
  std::vector<uint8_t> out, buf(1 << 16);
  for (;;) {
    size_t n = 0;
    if (handoff_encoder_pull_wait(enc, buf.data(), buf.size(), &n) != 0) break;
    if (n == 0 && handoff_encoder_done(enc)) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  return out;
}

}  // namespace

const FuzzBase& GetFuzzBase() {
  static FuzzBase* fb = [] {
    auto* b = new FuzzBase;
    b->mem.resize(kChunks * HANDOFF_CHUNK_SIZE);
    b->disk.resize(kChunks * HANDOFF_CHUNK_SIZE);
    for (uint64_t i = 0; i < kChunks; i++) {
      Fill(&b->mem[i * HANDOFF_CHUNK_SIZE], i, i % 2);
      Fill(&b->disk[i * HANDOFF_CHUNK_SIZE], 100 + i, i % 3);
    }
    HandoffRegionSpec specs[2] = {
        {"pc.ram", HANDOFF_REGION_MEMORY, nullptr, b->mem.data(), b->mem.size()},
        {"disk0", HANDOFF_REGION_DISK, nullptr, b->disk.data(), b->disk.size()}};
    if (handoff_base_create(specs, 2, nullptr, &b->base) != 0) __builtin_trap();
    return b;
  }();
  return *fb;
}

uint64_t BaseChunkCount() {
  uint64_t chunks = 0;
  handoff_base_counts(GetFuzzBase().base, &chunks, nullptr);
  return chunks;
}

const uint8_t* BaseChunk(uint64_t global) {
  const HandoffBase* base = GetFuzzBase().base;
  for (size_t r = 0; r < handoff_base_region_count(base); r++) {
    HandoffRegionInfo info;
    if (handoff_base_region_info(base, r, &info) != 0) return nullptr;
    const uint64_t chunks = info.size / HANDOFF_CHUNK_SIZE;
    if (global < chunks)
      return static_cast<const uint8_t*>(handoff_base_region_data(base, r)) +
             global * HANDOFF_CHUNK_SIZE;
    global -= chunks;
  }
  return nullptr;
}

bool BaseGlobal(uint64_t region, uint64_t index, uint64_t* global) {
  const HandoffBase* base = GetFuzzBase().base;
  uint64_t first = 0;
  for (size_t r = 0; r < handoff_base_region_count(base); r++) {
    HandoffRegionInfo info;
    if (handoff_base_region_info(base, r, &info) != 0) return false;
    const uint64_t chunks = info.size / HANDOFF_CHUNK_SIZE;
    if (r == region) {
      *global = first + index;
      return index < chunks;
    }
    first += chunks;
  }
  return false;
}

std::vector<uint8_t> MakeSeedStream(HandoffCodec codec, int level,
                                    HandoffDelta delta, int iterations) {
  const FuzzBase& fb = GetFuzzBase();
  HandoffEncoderConfig cfg{};
  cfg.struct_size = sizeof(cfg);
  handoff_encoder_config_default(&cfg);
  cfg.adaptive = 0;
  cfg.threads = 1;
  cfg.frame_bytes = 3 * HANDOFF_CHUNK_SIZE;
  cfg.mode = {codec, level, delta};
  HandoffEncoder* enc = nullptr;
  std::vector<uint8_t> out;
  if (handoff_encoder_create(fb.base, &cfg, &enc) != 0) return out;
  std::vector<uint8_t> mem = fb.mem, disk = fb.disk;
  for (int it = 0; it < iterations; it++) {
    if (it > 0) handoff_encoder_begin_iteration(enc, static_cast<uint32_t>(it));
    const size_t c = HANDOFF_CHUNK_SIZE;
    std::memset(&mem[(it % 4) * c], 0, c);                    // ZERO
    std::memcpy(&mem[(4 + it % 3) * c], &fb.disk[2 * c], c);  // BASE_REF
    Fill(&mem[(8 + it % 2) * c], 1000 + it, true);            // DATA
    std::memcpy(&disk[(10 + it % 3) * c], &mem[(8 + it % 2) * c], c);  // SELF
    disk[13 * c + it] ^= 0x5a;                                 // XOR-able
    for (uint64_t i = 0; i < kChunks; i++) {
      handoff_encoder_submit(enc, 0, i, &mem[i * c]);
      handoff_encoder_submit(enc, 1, i, &disk[i * c]);
    }
  }
  handoff_encoder_finish(enc);
  out = PullAll(enc);
  handoff_encoder_free(enc);
  return out;
}

std::vector<uint8_t> MakeSegmentedSeedStream(HandoffCodec codec, int level,
                                             HandoffDelta delta) {
  const FuzzBase& fb = GetFuzzBase();
  HandoffEncoderConfig cfg{};
  cfg.struct_size = sizeof(cfg);
  handoff_encoder_config_default(&cfg);
  cfg.adaptive = 0;
  cfg.mode = {codec, level, delta};
  cfg.segmented = 1;
  // Disk chunks first, so that the memory they copy comes after them.
  const HandoffChunkRef order[] = {{1, 12}, {0, 15}};
  cfg.order = order;
  cfg.order_count = 2;
  HandoffEncoder* enc = nullptr;
  std::vector<uint8_t> out;
  if (handoff_encoder_create(fb.base, &cfg, &enc) != 0) return out;
  std::vector<uint8_t> mem = fb.mem, disk = fb.disk;
  const size_t c = HANDOFF_CHUNK_SIZE;
  std::memset(&mem[0], 0, 2 * c);                         // ZERO, a run
  std::memcpy(&mem[3 * c], &fb.disk[2 * c], c);           // BASE_REF
  for (uint64_t i = 5; i < kChunks; i++)                  // DATA, in segments
    Fill(&mem[i * c], 2000 + i, i % 4 == 0);
  for (uint64_t i = 0; i < 4; i++)                        // more: 2 segments
    Fill(&disk[i * c], 3000 + i, false);
  for (uint64_t i = 8; i < kChunks; i++)                  // SELF_REF
    std::memcpy(&disk[i * c], &mem[(i - 3) * c], c);
  disk[4 * c + 7] ^= 0x5a;                                // XOR-able
  for (uint64_t i = 0; i < kChunks; i++) {
    handoff_encoder_submit(enc, 0, i, &mem[i * c]);
    handoff_encoder_submit(enc, 1, i, &disk[i * c]);
  }
  handoff_encoder_finish(enc);
  out = PullAll(enc);
  handoff_encoder_free(enc);
  return out;
}

std::vector<uint8_t> StreamInput(uint8_t selector,
                                 const std::vector<uint8_t>& stream) {
  if (stream.empty()) __builtin_trap();  // the engine wrote no seed
  std::vector<uint8_t> in(1 + stream.size());
  in[0] = selector;
  std::memcpy(&in[1], stream.data(), stream.size());
  return in;
}

}  // namespace handoff_fuzz
