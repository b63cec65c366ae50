// SPDX-License-Identifier: GPL-2.0-or-later
#include "record.h"

namespace handoff {
namespace {

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return false;
  return true;
}

}  // namespace

Status ParseRecord(ByteReader* r, Record* rec) {
  size_t at = r->pos();
  const uint8_t* h = r->GetBytes(kRecordHeaderSize);
  if (h == nullptr)
    return Status(HANDOFF_E_BAD_RECORD,
                  "record header at plaintext offset " + std::to_string(at) +
                      " runs past the frame");
  uint8_t type = h[0];
  rec->region = h[1];
  rec->flags = h[2];
  rec->iteration = LoadLe<uint32_t>(h + 4);
  rec->seq = LoadLe<uint64_t>(h + 8);
  rec->index = LoadLe<uint64_t>(h + 16);
  auto bad = [&](const std::string& why) {
    return Status(HANDOFF_E_BAD_RECORD, "record at plaintext offset " +
                                            std::to_string(at) + ": " + why);
  };
  if (h[3] != 0) return bad("reserved byte not zero");
  if (type < 1 || type > kRecordTypeCount)
    return bad("unknown record type " + std::to_string(type));
  rec->type = static_cast<RecordType>(type);
  if (rec->flags != 0 &&
      !(rec->type == RecordType::kData && rec->flags == kRecordFlagXor))
    return bad("flags " + std::to_string(rec->flags) + " not valid here");
  if (rec->seq == 0) return bad("sequence number 0");
  switch (rec->type) {
    case RecordType::kZero:
      return Status::Ok();
    case RecordType::kIteration:
      if (rec->region != 0 || rec->index != 0)
        return bad("iteration marker with a chunk address");
      return Status::Ok();
    case RecordType::kData:
      rec->data = r->GetBytes(kChunkSize);
      if (rec->data == nullptr) return bad("chunk data runs past the frame");
      return Status::Ok();
    case RecordType::kBaseRef: {
      const uint8_t* b = r->GetBytes(kBaseRefBodySize);
      if (b == nullptr) return bad("base reference runs past the frame");
      if (!AllZero(b + 1, 7)) return bad("reserved bytes not zero");
      rec->src_region = b[0];
      rec->src_index = LoadLe<uint64_t>(b + 8);
      return Status::Ok();
    }
    case RecordType::kSelfRef: {
      const uint8_t* b = r->GetBytes(kSelfRefBodySize);
      if (b == nullptr) return bad("self reference runs past the frame");
      if (!AllZero(b + 1, 7)) return bad("reserved bytes not zero");
      rec->src_region = b[0];
      rec->src_index = LoadLe<uint64_t>(b + 8);
      rec->src_seq = LoadLe<uint64_t>(b + 16);
      return Status::Ok();
    }
  }
  return bad("unreachable");
}

}  // namespace handoff
