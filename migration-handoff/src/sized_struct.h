// SPDX-License-Identifier: GPL-2.0-or-later
//
// The struct_size rule of handoff.h in one place: a caller compiled against
// an older or newer header passes structs of another size, and the library
// must neither read nor write beyond them, nor silently ignore a field it
// does not know that the caller set.
#ifndef HANDOFF_SIZED_STRUCT_H
#define HANDOFF_SIZED_STRUCT_H

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "handoff.h"
#include "status.h"

namespace handoff {

// Bytes of each struct's first published layout (0.3.0): the smallest
// struct_size a caller may pass. Frozen: never derive them from sizeof.
constexpr size_t kEncoderConfigV1 =
    offsetof(HandoffEncoderConfig, allow_delta) + sizeof(int);
constexpr size_t kEncoderStatsV1 =
    offsetof(HandoffEncoderStats, unencoded_bytes) + sizeof(uint64_t);
constexpr size_t kDecoderStatsV1 =
    offsetof(HandoffDecoderStats, held_bytes) + sizeof(uint64_t);
constexpr size_t kWriterV1 =
    offsetof(HandoffWriter, read_chunk) + sizeof(void*);

inline Status CheckStructSize(uint32_t size, size_t first_layout,
                              const char* type) {
  if (size < first_layout)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  std::string(type) + ".struct_size is " +
                      std::to_string(size) + ", at least " +
                      std::to_string(first_layout) +
                      " expected (set it to sizeof the struct)");
  return Status::Ok();
}

// Reads the caller's struct into *out, which holds the defaults of the
// fields the caller's layout lacks. Bytes past the fields this library
// knows must be zero: they are requests it cannot honour.
template <typename T>
Status ReadSized(const T* in, size_t first_layout, const char* type, T* out) {
  HANDOFF_RETURN_IF_ERROR(CheckStructSize(in->struct_size, first_layout, type));
  const size_t known = std::min<size_t>(in->struct_size, sizeof(T));
  std::memcpy(out, in, known);
  const auto* bytes = reinterpret_cast<const uint8_t*>(in);
  for (size_t i = known; i < in->struct_size; i++)
    if (bytes[i] != 0)
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    std::string(type) + " sets byte " + std::to_string(i) +
                        ", a field this library (" HANDOFF_VERSION_STRING
                        ") does not know");
  out->struct_size = sizeof(T);
  return Status::Ok();
}

// Writes @full into the caller's struct: the fields that fit, zeros past
// the ones this library knows; struct_size stays the caller's.
template <typename T>
Status WriteSized(const T& full, size_t first_layout, const char* type,
                  T* out) {
  const uint32_t size = out->struct_size;
  HANDOFF_RETURN_IF_ERROR(CheckStructSize(size, first_layout, type));
  const size_t known = std::min<size_t>(size, sizeof(T));
  std::memcpy(out, &full, known);
  std::memset(reinterpret_cast<uint8_t*>(out) + known, 0, size - known);
  out->struct_size = size;
  return Status::Ok();
}

}  // namespace handoff

#endif  // HANDOFF_SIZED_STRUCT_H
