// SPDX-License-Identifier: GPL-2.0-or-later
//
// What every fuzz target provides besides LLVMFuzzerTestOneInput, and the
// libFuzzer hooks the targets share. The same target file links into the
// libFuzzer binary (clang) and into the standalone smoke driver (any
// compiler), which supplies its own LLVMFuzzerMutate.
#ifndef HANDOFF_FUZZ_TARGET_H
#define HANDOFF_FUZZ_TARGET_H

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

extern "C" {
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
// libFuzzer's own mutation of @data in place (at most @max_size bytes);
// returns the new size.
size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);
// Defined by targets with a structure-aware mutator.
size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                               unsigned int seed);
}

// A property a target checks: failing it is a crash, so that libFuzzer
// keeps the input as a reproducer.
#define FUZZ_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "fuzz target: check failed: %s (%s:%d)\n", #cond,   \
              __FILE__, __LINE__);                                        \
      __builtin_trap();                                                   \
    }                                                                     \
  } while (0)

namespace handoff_fuzz {

// Valid inputs to start from: the smoke driver mutates them, and
// "--write-seeds DIR" writes them as a corpus.
std::vector<std::vector<uint8_t>> TargetSeeds();

// Small deterministic generator for mutators and drivers (xorshift64).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t Next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }
  // Uniform enough in [0, n); n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }
  bool OneIn(uint64_t n) { return Below(n) == 0; }

 private:
  uint64_t s_;
};

// A value worth trying in an integer field that held @old: boundaries of
// the fuzz geometry and of the integer types, neighbours of @old, random.
uint64_t InterestingValue(Rng* rng, uint64_t old);

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_TARGET_H
