// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: `qemu-handoff inspect` over any bytes must report and
// return, whatever the stream claims about its lengths.
//
// Input: a selector byte, then the stream, as for the decoder target (the
// corpora are interchangeable): bit 0 asks for JSON, bit 7 mends check
// values first so that blind mutations get past the header and frame
// checks. The decoder's structure-aware mutator varies frames and end
// record (frames as a whole: inspect never looks inside one).
#include <cstdio>
#include <vector>

#include "fuzz_base.h"
#include "fuzz_target.h"
#include "inspect.h"
#include "stream_model.h"
#include "stream_mutator.h"

namespace handoff_fuzz {

std::vector<std::vector<uint8_t>> TargetSeeds() {
  const std::vector<uint8_t> streams[] = {
      MakeSeedStream(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_PREFIX, 2),
      MakeSeedStream(HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE, 1),
  };
  // Repaired, as text and as JSON.
  return {StreamInput(0x80, streams[0]), StreamInput(0x81, streams[1])};
}

}  // namespace handoff_fuzz

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size,
                                          size_t max_size, unsigned int seed) {
  return handoff_fuzz::MutateStreamInput(data, size, max_size, seed,
                                         handoff_fuzz::StreamMutations::kFrames);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The report is formatted in full and thrown away.
  static FILE* sink = fopen("/dev/null", "w");
  if (size < 1 || sink == nullptr) return 0;
  const uint8_t how = data[0];
  std::vector<uint8_t> stream(data + 1, data + size);
  if (how & 0x80) handoff_fuzz::RepairStream(stream.data(), stream.size());
  handoff_cli::InspectStream(stream.data(), stream.size(), how & 1, sink, sink);
  return 0;
}
