// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: any byte string fed to the decoder, whole, in pieces or
// frame by frame out of order, must give an error code or success — never
// a crash, hang, leak or out-of-bounds access (run under ASan/UBSan) — and
// the same result however it is delivered: in pieces the same code and
// image as whole, out of order the same image whenever both succeed.
//
// Input: a selector byte, then the stream. The selector picks how the
// stream is delivered and, with bit 7, mends the check values of blind
// mutations first. The custom mutator changes records inside frames and
// recompresses them (stream_mutator.h), so most inputs get past the
// integrity checks to the record semantics.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_base.h"
#include "fuzz_target.h"
#include "handoff.h"
#include "stream_model.h"
#include "stream_mutator.h"

namespace handoff_fuzz {

std::vector<std::vector<uint8_t>> TargetSeeds() {
  const std::vector<uint8_t> streams[] = {
      MakeSeedStream(HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE, 3),
      MakeSeedStream(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_XOR, 3),
      MakeSeedStream(HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_PREFIX, 2),
      MakeSeedStream(HANDOFF_CODEC_LZMA, 1, HANDOFF_DELTA_NONE, 2),
      MakeSeedStream(HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_NONE, 2),
  };
  std::vector<std::vector<uint8_t>> seeds;
  // Selector % 3: 0 whole, 1 in pieces (sizes from the selector), 2
  // frames out of order; bit 7: repaired. Each way for some stream; the
  // mutator varies the rest.
  const uint8_t selectors[] = {0x81, 0x00, 0x80, 0xfd, 0x81};
  for (size_t i = 0; i < sizeof(selectors); i++)
    seeds.push_back(StreamInput(selectors[i], streams[i]));
  return seeds;
}

}  // namespace handoff_fuzz

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size,
                                          size_t max_size, unsigned int seed) {
  return handoff_fuzz::MutateStreamInput(data, size, max_size, seed,
                                         handoff_fuzz::StreamMutations::kRecords);
}

namespace handoff_fuzz {
namespace {

// Decodes @data into @mem and @disk, which start as the base, delivered
// as @how says (see TargetSeeds); returns what finishing says.
int Decode(const uint8_t* data, size_t size, uint8_t how,
           std::vector<uint8_t>* mem, std::vector<uint8_t>* disk) {
  const FuzzBase& fb = GetFuzzBase();
  mem->assign(fb.mem.begin(), fb.mem.end());
  disk->assign(fb.disk.begin(), fb.disk.end());
  void* regions[2] = {mem->data(), disk->data()};
  HandoffDecoder* dec = nullptr;
  FUZZ_CHECK(handoff_decoder_create(fb.base, nullptr, regions, &dec) == 0);
  switch (how % 3) {
    case 0:
      handoff_decoder_feed(dec, data, size);
      break;
    case 1: {
      // Pieces alternate between small and large, so that splits fall
      // anywhere (header, frame headers, payloads, end record) without
      // feeding a long stream a few bytes at a time.
      const size_t small = (how & 0x7f) / 3 + 1, large = small * 1021;
      for (size_t pos = 0, k = 0; pos < size; k++) {
        const size_t step = k % 2 ? large : small;
        const size_t n = step < size - pos ? step : size - pos;
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
  const int rc = handoff_decoder_finish(dec);
  HandoffDecoderStats stats{};
  stats.struct_size = sizeof(stats);
  FUZZ_CHECK(handoff_decoder_stats(dec, &stats) == 0);
  handoff_decoder_free(dec);
  return rc;
}

}  // namespace
}  // namespace handoff_fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t how = data[0];
  data++;
  size--;
  std::vector<uint8_t> repaired;
  if (how & 0x80) {
    repaired.assign(data, data + size);
    handoff_fuzz::RepairStream(repaired.data(), repaired.size());
    data = repaired.data();
  }
  // Destination buffers kept across inputs: allocating them costs more
  // than copying the base into them.
  static std::vector<uint8_t> mem, disk, whole_mem, whole_disk;
  const int rc = handoff_fuzz::Decode(data, size, how, &mem, &disk);
  if (how % 3 == 0) return 0;
  // The same stream read whole and in order: pieces must change nothing,
  // and frames applied out of order must give what reading in order
  // gives whenever both succeed (newest wins, whatever the order).
  const int whole = handoff_fuzz::Decode(data, size, 0, &whole_mem, &whole_disk);
  if (how % 3 == 1) FUZZ_CHECK(rc == whole);
  if (rc == 0 && whole == 0) FUZZ_CHECK(mem == whole_mem && disk == whole_disk);
  return 0;
}
