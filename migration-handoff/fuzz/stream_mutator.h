// SPDX-License-Identifier: GPL-2.0-or-later
//
// The structure-aware mutator of the stream targets (decoder, inspect):
// their input is a selector byte, then a stream. Most of the time it
// takes the stream apart (stream_model.h), changes records inside a
// frame's plaintext or frames as a whole, and puts it back together with
// every check value valid; otherwise, and for inputs that do not parse,
// it leaves the bytes to libFuzzer's own mutations.
#ifndef HANDOFF_FUZZ_STREAM_MUTATOR_H
#define HANDOFF_FUZZ_STREAM_MUTATOR_H

#include <cstddef>
#include <cstdint>

namespace handoff_fuzz {

enum class StreamMutations {
  kRecords,  // records inside frames too: frames are decompressed
  kFrames,   // frames as a whole only (for targets that never look
             // inside a frame: no codec work at all)
};

// LLVMFuzzerCustomMutator for inputs of the stream targets.
size_t MutateStreamInput(uint8_t* data, size_t size, size_t max_size,
                         unsigned int seed, StreamMutations what);

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_STREAM_MUTATOR_H
