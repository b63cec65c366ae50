// SPDX-License-Identifier: GPL-2.0-or-later
//
// Runs a fuzz target without libFuzzer (e.g. under gcc, as meson tests):
// over the files and directories named on the command line (a corpus, a
// reproducer), or over the target's seeds and a fixed number of
// deterministic mutations of them, through the target's custom mutator
// when it has one. With "--write-seeds DIR" it writes the seeds as a
// libFuzzer corpus.
#include <dirent.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_target.h"

// Targets without a structure-aware mutator do not define it.
#pragma weak LLVMFuzzerCustomMutator

namespace {

// Mutations per seed; each applies one to three mutations in a row.
constexpr int kMutationsPerSeed = 400;

bool ReadFile(const char* path, std::vector<uint8_t>* out) {
  FILE* f = fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->insert(out->end(), buf, buf + n);
  fclose(f);
  return true;
}

// Runs the target over @path, or over every file in it when it is a
// directory, in name order. Returns the inputs run, or -1.
long RunPath(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) {
    std::vector<uint8_t> buf;
    if (!ReadFile(path.c_str(), &buf)) return -1;
    LLVMFuzzerTestOneInput(buf.data(), buf.size());
    return 1;
  }
  std::vector<std::string> names;
  while (const struct dirent* e = readdir(dir))
    if (e->d_name[0] != '.') names.push_back(e->d_name);
  closedir(dir);
  std::sort(names.begin(), names.end());
  long runs = 0;
  for (const std::string& name : names) {
    const long n = RunPath(path + "/" + name);
    if (n < 0) return -1;
    runs += n;
  }
  return runs;
}

}  // namespace

// What libFuzzer's LLVMFuzzerMutate does, roughly: bit flips, truncation,
// field-sized runs of extreme values, duplicated slices (repeated frames,
// trailing data). Custom mutators fall back on it.
extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size) {
  static handoff_fuzz::Rng rng(0x1234567);
  if (size == 0) {
    if (max_size == 0) return 0;
    data[0] = static_cast<uint8_t>(rng.Next());
    return 1;
  }
  switch (rng.Below(4)) {
    case 0:
      for (uint64_t k = 1 + rng.Below(5); k > 0; k--)
        data[rng.Below(size)] ^= static_cast<uint8_t>(1u << rng.Below(8));
      return size;
    case 1:
      return 1 + rng.Below(size);
    case 2: {
      const size_t at = rng.Below(size);
      const uint8_t v = rng.OneIn(2) ? 0xff : 0x00;
      for (size_t k = 0; k < 8 && at + k < size; k++) data[at + k] = v;
      return size;
    }
    default: {
      const size_t at = rng.Below(size);
      size_t n = std::min<size_t>(rng.Below(512), size - at);
      if (size + n > max_size) n = max_size - size;
      std::memmove(data + at + n, data + at, size - at);
      return size + n;
    }
  }
}

int main(int argc, char** argv) {
  const std::vector<std::vector<uint8_t>> seeds = handoff_fuzz::TargetSeeds();
  if (argc == 3 && std::strcmp(argv[1], "--write-seeds") == 0) {
    for (size_t n = 0; n < seeds.size(); n++) {
      const std::string path = std::string(argv[2]) + "/seed-" + std::to_string(n);
      FILE* f = fopen(path.c_str(), "wb");
      if (f == nullptr ||
          fwrite(seeds[n].data(), 1, seeds[n].size(), f) != seeds[n].size())
        return 1;
      fclose(f);
    }
    return 0;
  }
  if (argc > 1) {
    long runs = 0;
    for (int i = 1; i < argc; i++) {
      const long n = RunPath(argv[i]);
      if (n < 0) {
        fprintf(stderr, "%s: cannot read %s\n", argv[0], argv[i]);
        return 1;
      }
      runs += n;
    }
    printf("%s: %ld inputs, no crash\n", argv[0], runs);
    return 0;
  }
  handoff_fuzz::Rng rng(42);
  size_t runs = 0, custom = 0;
  for (const std::vector<uint8_t>& seed : seeds) {
    if (seed.empty()) return 1;
    LLVMFuzzerTestOneInput(seed.data(), seed.size());
    runs++;
    const size_t max_size = seed.size() * 2 + 65536;
    for (int m = 0; m < kMutationsPerSeed; m++) {
      std::vector<uint8_t> in(seed);
      in.resize(max_size);
      size_t size = seed.size();
      for (uint64_t k = 1 + rng.Below(3); k > 0; k--) {
        if (LLVMFuzzerCustomMutator != nullptr && m % 4 != 0) {
          size = LLVMFuzzerCustomMutator(in.data(), size, max_size,
                                         static_cast<unsigned>(rng.Next()));
          custom++;
        } else {
          size = LLVMFuzzerMutate(in.data(), size, max_size);
        }
      }
      LLVMFuzzerTestOneInput(in.data(), size);
      runs++;
    }
  }
  printf("%s: %zu inputs (%zu custom mutations), no crash\n", argv[0], runs,
         custom);
  return 0;
}
