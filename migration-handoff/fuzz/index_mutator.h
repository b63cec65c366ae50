// SPDX-License-Identifier: GPL-2.0-or-later
//
// The structure-aware mutator of the base index target. An index whose
// header parses is changed in one of three ways, each keeping the header
// checksum valid so that the open gets past it:
//  - rebuilt by the engine's own writer (BuildBaseIndex) after changing
//    regions, file names (real files, links, FIFOs, escaping paths), sizes
//    or hashes, usually with hashes and content ID recomputed from the
//    files so that the open and verify succeed;
//  - header bytes overwritten (layout fields: counts, table size, array
//    offsets) and the checksum recomputed;
//  - table slots or hashes overwritten in place (no checksum covers them).
// Other inputs are left to libFuzzer's own mutations.
#ifndef HANDOFF_FUZZ_INDEX_MUTATOR_H
#define HANDOFF_FUZZ_INDEX_MUTATOR_H

#include <cstddef>
#include <cstdint>

namespace handoff_fuzz {

// LLVMFuzzerCustomMutator for the index target.
size_t MutateIndexInput(uint8_t* data, size_t size, size_t max_size,
                        unsigned int seed);

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_INDEX_MUTATOR_H
