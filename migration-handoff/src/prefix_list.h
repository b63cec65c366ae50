// SPDX-License-Identifier: GPL-2.0-or-later
//
// The prefix list that starts the payload of a PREFIX frame
// (docs/stream-format.md, "Prefix list"): the base chunks whose
// concatenation is the zstd raw-content prefix of the frame ("patch-from").
// The encoder lists the base chunks at the places of the frame's DATA
// records, so that data close to its base costs little more than the
// differences.
#ifndef HANDOFF_PREFIX_LIST_H
#define HANDOFF_PREFIX_LIST_H

#include <cstdint>
#include <string>
#include <vector>

#include "base.h"
#include "byte_io.h"
#include "format.h"
#include "status.h"

namespace handoff {

// At most one base chunk per chunk of the largest plaintext.
inline constexpr uint32_t kMaxPrefixChunks = kMaxPlainLength / kChunkSize;

// Bytes the list of @count chunks takes in the payload.
size_t PrefixListSize(size_t count);

// Appends the list of @chunks (base global chunk numbers) to @out.
void AppendPrefixList(const std::vector<uint64_t>& chunks, std::string* out);

// Reads the list at the start of @payload, leaving @payload after it.
// Each chunk must be below @base_chunks. HANDOFF_E_FRAME_HEADER_CORRUPT,
// HANDOFF_E_LENGTH_LIMIT or HANDOFF_E_BAD_BASE_REF otherwise.
Status ReadPrefixList(ByteReader* payload, uint64_t base_chunks,
                      std::vector<uint64_t>* chunks);

// The prefix itself: the listed base chunks, concatenated in list order.
void GatherPrefix(const Base& base, const std::vector<uint64_t>& chunks,
                  std::vector<uint8_t>* prefix);

}  // namespace handoff

#endif  // HANDOFF_PREFIX_LIST_H
