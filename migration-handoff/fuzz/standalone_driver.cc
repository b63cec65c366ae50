// SPDX-License-Identifier: GPL-2.0-or-later
//
// Runs the decoder fuzz target without libFuzzer (e.g. under gcc): over
// files named on the command line, or over seed streams and a fixed
// number of deterministic mutations of them. With "--write-seeds DIR" it
// writes the seed streams for a libFuzzer corpus.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_base.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::vector<uint8_t>> Seeds() {
  using handoff_fuzz::MakeSeedStream;
  std::vector<std::vector<uint8_t>> seeds = {
      MakeSeedStream(HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE, 3),
      MakeSeedStream(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_XOR, 3),
      MakeSeedStream(HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_PREFIX, 2),
      MakeSeedStream(HANDOFF_CODEC_LZMA, 1, HANDOFF_DELTA_NONE, 2),
      MakeSeedStream(HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_NONE, 2),
  };
  return seeds;
}

uint64_t Next(uint64_t* s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--write-seeds") == 0) {
    int n = 0;
    for (const auto& s : Seeds()) {
      std::string path = std::string(argv[2]) + "/seed-" + std::to_string(n++);
      FILE* f = fopen(path.c_str(), "wb");
      if (f == nullptr) return 1;
      uint8_t how = n % 2 ? 0x80 : 0;
      fwrite(&how, 1, 1, f);
      fwrite(s.data(), 1, s.size(), f);
      fclose(f);
    }
    return 0;
  }
  if (argc > 1) {
    for (int i = 1; i < argc; i++) {
      FILE* f = fopen(argv[i], "rb");
      if (f == nullptr) return 1;
      std::vector<uint8_t> buf;
      int c;
      while ((c = fgetc(f)) != EOF) buf.push_back(static_cast<uint8_t>(c));
      fclose(f);
      LLVMFuzzerTestOneInput(buf.data(), buf.size());
    }
    return 0;
  }
  uint64_t rng = 0x1234567;
  size_t runs = 0;
  for (const auto& seed : Seeds()) {
    if (seed.empty()) return 1;
    for (int m = 0; m < 600; m++) {
      std::vector<uint8_t> in;
      in.push_back(static_cast<uint8_t>(Next(&rng)));
      in.insert(in.end(), seed.begin(), seed.end());
      switch (m % 4) {
        case 0:  // flip bits
          for (int k = 0; k < 1 + m % 5; k++)
            in[1 + Next(&rng) % seed.size()] ^= static_cast<uint8_t>(1u << (Next(&rng) % 8));
          break;
        case 1:  // truncate
          in.resize(1 + Next(&rng) % seed.size());
          break;
        case 2: {  // overwrite a field-sized run with extreme values
          size_t at = 1 + Next(&rng) % seed.size();
          for (size_t k = 0; k < 8 && at + k < in.size(); k++)
            in[at + k] = (m & 8) ? 0xff : 0x00;
          break;
        }
        case 3: {  // duplicate a slice (repeated frames, trailing data)
          size_t a = 1 + Next(&rng) % seed.size();
          size_t n = Next(&rng) % 512;
          if (a + n > in.size()) n = in.size() - a;
          std::vector<uint8_t> slice(in.begin() + a, in.begin() + a + n);
          in.insert(in.begin() + a, slice.begin(), slice.end());
          break;
        }
      }
      LLVMFuzzerTestOneInput(in.data(), in.size());
      runs++;
    }
    // The unmutated seed, delivered all three ways.
    for (uint8_t how = 0; how < 6; how++) {
      std::vector<uint8_t> in(1, how);
      in.insert(in.end(), seed.begin(), seed.end());
      LLVMFuzzerTestOneInput(in.data(), in.size());
      runs++;
    }
  }
  printf("decoder fuzz smoke: %zu inputs, no crash\n", runs);
  return 0;
}
