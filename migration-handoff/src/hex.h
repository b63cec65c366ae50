// SPDX-License-Identifier: GPL-2.0-or-later
//
// Lower-case hex of bytes, for messages naming IDs and digests.
#ifndef HANDOFF_HEX_H
#define HANDOFF_HEX_H

#include <cstddef>
#include <cstdint>
#include <string>

namespace handoff {

inline std::string Hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

}  // namespace handoff

#endif  // HANDOFF_HEX_H
