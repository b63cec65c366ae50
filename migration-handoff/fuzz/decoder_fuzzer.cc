// SPDX-License-Identifier: GPL-2.0-or-later
//
// libFuzzer target: any byte string fed to the decoder, whole, in pieces or
// frame by frame out of order, must give an error code or success — never
// a crash, hang, leak or out-of-bounds access (run under ASan/UBSan).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "byte_io.h"
#include "format.h"
#include "fuzz_base.h"
#include "handoff.h"
#include "record.h"

namespace {

// Records a stored plaintext holds, as far as they parse: a frame whose
// records do not all parse fails at the first bad one, whatever its
// count says.
uint32_t CountRecords(const uint8_t* plain, size_t len) {
  handoff::RecordIterator records(plain, len);
  handoff::Record rec;
  uint32_t n = 0;
  while (records.Next(&rec)) n++;
  return n;
}

// Recomputes the check values a mutation broke (header, frame headers,
// stored frames' plaintext fields, end record), so that the fuzzer also
// reaches record parsing and application instead of stopping at the
// first checksum. Lengths are taken as found, within the input.
void Repair(uint8_t* d, size_t size) {
  using namespace handoff;
  if (size < kStreamHeaderPrefix) return;
  const size_t h = DeclaredHeaderLength(d);
  if (h < kMinHeaderLength || h > size) return;
  ResealStreamHeader(d, h);
  size_t pos = h;
  while (size - pos >= 4) {
    const uint32_t tag = LoadLe<uint32_t>(d + pos);
    if (tag == kEndTag && size - pos >= kEndRecordSize) {
      ResealEndRecord(d, pos);
      return;
    }
    if (tag != kFrameTag || size - pos < kFrameHeaderSize) return;
    FrameHeader f = ReadFrameHeaderUnchecked(d + pos);
    if (f.payload_length > size - pos - kFrameHeaderSize) return;
    const uint8_t* payload = d + pos + kFrameHeaderSize;
    if (f.codec == HANDOFF_CODEC_NONE && f.flags == 0) {
      f.plain_length = f.payload_length;
      f.plain_checksum = Checksum64(payload, f.payload_length);
      f.record_count = CountRecords(payload, f.payload_length);
    }
    SerializeFrameHeader(f, d + pos);
    pos += kFrameHeaderSize + f.payload_length;
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
