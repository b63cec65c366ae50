// SPDX-License-Identifier: GPL-2.0-or-later
//
// The small deterministic base every fuzz input is decoded against, and a
// valid stream over it to start mutating from.
#ifndef HANDOFF_FUZZ_BASE_H
#define HANDOFF_FUZZ_BASE_H

#include <cstdint>
#include <vector>

#include "handoff.h"

namespace handoff_fuzz {

constexpr uint64_t kChunks = 16;

struct FuzzBase {
  std::vector<uint8_t> mem, disk;
  HandoffBase* base = nullptr;
};

// Built once per process; never freed (the fuzzer runs until killed).
const FuzzBase& GetFuzzBase();

// Chunks in the fuzz base, and base chunk @global (global numbering, as
// prefix lists and base references name them); null beyond the base.
uint64_t BaseChunkCount();
const uint8_t* BaseChunk(uint64_t global);
// The global number of chunk @index of region @region; false outside.
bool BaseGlobal(uint64_t region, uint64_t index, uint64_t* global);

// A valid stream over the fuzz base: @iterations iterations, small frames,
// the given codec; covers every record type.
std::vector<uint8_t> MakeSeedStream(HandoffCodec codec, int level,
                                    HandoffDelta delta, int iterations);

// A valid segmented stream (version 3) over the fuzz base, with an order
// input, zero runs, base references, data and self references across
// segments.
std::vector<uint8_t> MakeSegmentedSeedStream(HandoffCodec codec, int level,
                                             HandoffDelta delta);

// An input of the stream targets: @selector, then @stream (non-empty).
std::vector<uint8_t> StreamInput(uint8_t selector,
                                 const std::vector<uint8_t>& stream);

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_BASE_H
