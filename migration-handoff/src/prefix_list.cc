// SPDX-License-Identifier: GPL-2.0-or-later
#include "prefix_list.h"

#include <cstring>

namespace handoff {
namespace {

// u32 count, u32 reserved (0), then count u64 chunk numbers.
constexpr size_t kListHeaderSize = 8;
constexpr size_t kListEntrySize = 8;

}  // namespace

size_t PrefixListSize(size_t count) {
  return kListHeaderSize + kListEntrySize * count;
}

void AppendPrefixList(const std::vector<uint64_t>& chunks, std::string* out) {
  ByteWriter w(out);
  w.Put<uint32_t>(static_cast<uint32_t>(chunks.size()));
  w.Put<uint32_t>(0);
  for (uint64_t g : chunks) w.Put<uint64_t>(g);
}

Status ReadPrefixList(ByteReader* payload, uint64_t base_chunks,
                      std::vector<uint64_t>* chunks) {
  const uint32_t count = payload->Get<uint32_t>();
  const uint32_t reserved = payload->Get<uint32_t>();
  if (payload->overrun() || reserved != 0)
    return Status(HANDOFF_E_FRAME_HEADER_CORRUPT, "bad prefix list header");
  if (count == 0 || count > kMaxPrefixChunks ||
      payload->remaining() / kListEntrySize < count)
    return Status(HANDOFF_E_LENGTH_LIMIT, "prefix of " + std::to_string(count) +
                                              " chunks beyond limits");
  chunks->clear();
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t g = payload->Get<uint64_t>();
    if (g >= base_chunks)
      return Status(HANDOFF_E_BAD_BASE_REF,
                    "prefix names base chunk " + std::to_string(g) + " of " +
                        std::to_string(base_chunks));
    chunks->push_back(g);
  }
  return Status::Ok();
}

void GatherPrefix(const Base& base, const std::vector<uint64_t>& chunks,
                  std::vector<uint8_t>* prefix) {
  prefix->resize(chunks.size() * kChunkSize);
  for (size_t i = 0; i < chunks.size(); i++)
    std::memcpy(prefix->data() + i * kChunkSize, base.ChunkGlobal(chunks[i]),
                kChunkSize);
}

}  // namespace handoff
