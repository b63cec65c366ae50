// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: any byte string fed to the decoder, whole, in pieces or
// frame by frame out of order, must give an error code or success — never
// a crash, hang, leak or out-of-bounds access (run under ASan/UBSan).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <xxhash.h>

#include "fuzz_base.h"
#include "handoff.h"

namespace {

uint32_t Le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

// Recomputes the checksums a mutation broke (header, stored frames, end
// record), so that the fuzzer also reaches record parsing and application
// instead of stopping at the first checksum.
void Repair(uint8_t* d, size_t size) {
  if (size < 16) return;
  size_t h = Le32(d + 12);
  if (h < 48 || h > size) return;
  Put64(d + h - 8, XXH3_64bits(d, h - 8));
  size_t pos = h;
  while (size - pos >= 4) {
    uint32_t tag = Le32(d + pos);
    if (tag == 0x21444E45 && size - pos >= 104) {
      uint8_t* e = d + pos;
      Put64(e + 72, pos);
      XXH128_canonical_t c;
      XXH128_canonicalFromHash(&c, XXH3_128bits(d, pos));
      std::memcpy(e + 80, c.digest, 16);
      Put64(e + 96, XXH3_64bits(e, 96));
      return;
    }
    if (tag != 0x4D415246 || size - pos < 40) return;
    uint8_t* f = d + pos;
    size_t payload = Le32(f + 8);
    if (payload > size - pos - 40) return;
    if (f[4] == 0 && (Le32(f + 6) & 0xffff) == 0) {
      const uint8_t* plain = f + 40;
      Put32(f + 12, static_cast<uint32_t>(payload));
      Put64(f + 24, XXH3_64bits(plain, payload));
      uint32_t records = 0;
      for (size_t r = 0; r + 24 <= payload; records++) {
        uint8_t type = plain[r];
        r += 24 + (type == 2 ? 4096 : type == 3 ? 16 : type == 4 ? 24 : 0);
      }
      Put32(f + 32, records);
    }
    Put32(f + 36, static_cast<uint32_t>(XXH3_64bits(f, 36)));
    pos += 40 + payload;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const handoff_fuzz::FuzzBase& fb = handoff_fuzz::GetFuzzBase();
  if (size < 1) return 0;
  // The first byte picks how the rest is delivered, and whether
  // checksums are repaired first.
  const uint8_t how = data[0];
  data++;
  size--;
  std::vector<uint8_t> repaired;
  if (how & 0x80) {
    repaired.assign(data, data + size);
    Repair(repaired.data(), repaired.size());
    data = repaired.data();
  }
  std::vector<uint8_t> mem = fb.mem, disk = fb.disk;
  void* regions[2] = {mem.data(), disk.data()};
  HandoffDecoder* dec = nullptr;
  if (handoff_decoder_create(fb.base, nullptr, regions, &dec) != 0) return 0;
  switch (how % 3) {
    case 0:
      handoff_decoder_feed(dec, data, size);
      break;
    case 1: {
      size_t step = (how & 0x7f) / 3 + 1, pos = 0;
      while (pos < size) {
        size_t n = step < size - pos ? step : size - pos;
        if (handoff_decoder_feed(dec, data + pos, n) != 0) break;
        pos += n;
      }
      break;
    }
    case 2: {
      size_t header = 0, count = 0;
      size_t offsets[64], lengths[64];
      if (handoff_stream_split(data, size, &header, offsets, lengths, 64,
                               &count) != 0 ||
          count > 64) {
        handoff_decoder_feed(dec, data, size);
        break;
      }
      if (handoff_decoder_feed(dec, data, header) != 0) break;
      // Apply frames in an order derived from the selector byte.
      for (size_t k = 0; k < count; k++) {
        size_t i = (k * (how | 1)) % count;
        if (handoff_decoder_apply_frame(dec, data + offsets[i], lengths[i]) != 0)
          break;
      }
      size_t end = count ? offsets[count - 1] + lengths[count - 1] : header;
      handoff_decoder_feed(dec, data + end, size - end);
      break;
    }
  }
  handoff_decoder_finish(dec);
  handoff_decoder_free(dec);
  return 0;
}
