// SPDX-License-Identifier: GPL-2.0-or-later
#include "xor_delta.h"

#include <cstring>

#include "chunk.h"
#include "record.h"

namespace handoff {
namespace {

size_t ZeroWords(const uint8_t* p) {
  size_t n = 0;
  for (size_t i = 0; i < kChunkSize; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    n += w == 0;
  }
  return n;
}

}  // namespace

Status ApplyXorDelta(const Base& base, std::string* plain,
                     uint64_t* converted) {
  *converted = 0;
  RecordIterator records(reinterpret_cast<const uint8_t*>(plain->data()),
                         plain->size());
  RecordWriter writer(plain);
  uint8_t x[kChunkSize];
  Record rec;
  while (records.Next(&rec)) {
    if (rec.kind != RecordKind::kData) continue;
    XorChunk(rec.data, base.Chunk(rec.region, rec.index), x);
    if (ZeroWords(x) > ZeroWords(rec.data)) {
      writer.RewriteAsXor(rec, x);
      ++*converted;
    }
  }
  // The plaintext is the encoder's own: a record that does not parse is
  // a bug, not bad input.
  if (!records.status().ok())
    return Status(HANDOFF_E_INTERNAL,
                  "XOR pass: " + records.status().message());
  return Status::Ok();
}

}  // namespace handoff
