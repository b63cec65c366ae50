// SPDX-License-Identifier: GPL-2.0-or-later
#include "order_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace handoff_cli {
namespace {

bool IsDecimal(const std::string& s) {
  return !s.empty() && s.size() <= 19 &&
         s.find_first_not_of("0123456789") == std::string::npos;
}

// Parses one non-comment line "NAME INDEX [NS]" into *@ref, or says why
// not. NS, a recording's time of first touch (QEMU's handoff-record-stop
// writes it), is checked and not used: the lines' order is the order.
bool ParseLine(const std::string& line, const HandoffBase* base,
               HandoffChunkRef* ref, std::string* why) {
  const size_t blank = line.find_first_of(" \t");
  if (blank == std::string::npos || blank == 0) {
    *why = "expected 'REGION INDEX [NS]'";
    return false;
  }
  const std::string name = line.substr(0, blank);
  const size_t digits = line.find_first_not_of(" \t", blank);
  const size_t end = digits == std::string::npos
                         ? std::string::npos
                         : line.find_first_of(" \t", digits);
  const std::string number =
      digits == std::string::npos ? "" : line.substr(digits, end - digits);
  if (!IsDecimal(number)) {
    *why = "chunk index '" + number + "' is not a decimal number";
    return false;
  }
  if (end != std::string::npos) {
    const size_t ns_at = line.find_first_not_of(" \t", end);
    const std::string ns =
        ns_at == std::string::npos ? "" : line.substr(ns_at);
    if (!IsDecimal(ns)) {
      *why = "time '" + ns + "' is not a decimal number";
      return false;
    }
  }
  const unsigned long long index = std::stoull(number);  // < 10^19: fits
  for (size_t r = 0; r < handoff_base_region_count(base); r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    if (name != info.name) continue;
    if (index >= info.size / HANDOFF_CHUNK_SIZE) {
      *why = "chunk " + number + " is past region '" + name + "'";
      return false;
    }
    ref->region = static_cast<uint32_t>(r);
    ref->chunk_index = index;
    return true;
  }
  *why = "no region '" + name + "' in the base";
  return false;
}

}  // namespace

bool ReadOrderFile(const std::string& path, const HandoffBase* base,
                   std::vector<HandoffChunkRef>* order, std::string* err) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(path.c_str(), "r"), fclose);
  if (!f) {
    *err = path + ": " + strerror(errno);
    return false;
  }
  uint64_t chunks = 0, distinct = 0;
  handoff_base_counts(base, &chunks, &distinct);
  char buf[kMaxOrderLine + 2];
  for (size_t line_no = 1; fgets(buf, sizeof(buf), f.get()) != nullptr;
       line_no++) {
    std::string line(buf);
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    if (line.empty() || line.back() != '\n') {
      if (line.size() > kMaxOrderLine || !feof(f.get())) {
        *err = where + "line longer than " + std::to_string(kMaxOrderLine) +
               " bytes";
        return false;
      }
    } else {
      line.pop_back();
    }
    if (line.empty() || line[0] == '#') continue;
    if (order->size() >= chunks) {
      *err = where + "more entries than the base's " + std::to_string(chunks) +
             " chunks";
      return false;
    }
    HandoffChunkRef ref;
    std::string why;
    if (!ParseLine(line, base, &ref, &why)) {
      *err = where + why;
      return false;
    }
    order->push_back(ref);
  }
  if (ferror(f.get())) {
    *err = path + ": read error";
    return false;
  }
  return true;
}

}  // namespace handoff_cli
