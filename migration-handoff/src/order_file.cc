// SPDX-License-Identifier: GPL-2.0-or-later
#include "order_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace handoff {
namespace {

bool IsDecimal(const std::string& s) {
  return !s.empty() && s.size() <= 19 &&
         s.find_first_not_of("0123456789") == std::string::npos;
}

// Parses one non-comment line "NAME INDEX [NS]" into *@ref, or says why
// not. NS, a recording's time of first touch (QEMU's handoff-record-stop
// writes it), is checked and not used: the lines' order is the order.
bool ParseLine(const std::string& line, const Geometry& geometry,
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
  for (size_t r = 0; r < geometry.region_count(); r++) {
    if (name != geometry.regions()[r].name) continue;
    if (index >= geometry.regions()[r].chunks()) {
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

Status ReadOrderFile(const std::string& path, const Geometry& geometry,
                     std::vector<HandoffChunkRef>* order) {
  // Opened without blocking and read only if regular: a FIFO or a device
  // named by mistake would hang or feed the reader without end (QEMU reads
  // it with its main loop held).
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return Status(HANDOFF_E_IO, path + ": " + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status(HANDOFF_E_IO, path + ": not a regular file");
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(fdopen(fd, "r"), fclose);
  if (!f) {
    close(fd);
    return Status(HANDOFF_E_IO, path + ": " + strerror(errno));
  }
  const uint64_t chunks = geometry.total_chunks();
  char buf[kMaxOrderLine + 2];
  for (size_t line_no = 1; fgets(buf, sizeof(buf), f.get()) != nullptr;
       line_no++) {
    std::string line(buf);
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    if (line.empty() || line.back() != '\n') {
      if (line.size() > kMaxOrderLine || !feof(f.get())) {
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      where + "line longer than " +
                          std::to_string(kMaxOrderLine) + " bytes");
      }
    } else {
      line.pop_back();
    }
    if (line.empty() || line[0] == '#') continue;
    if (order->size() >= chunks) {
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    where + "more entries than the base's " +
                        std::to_string(chunks) + " chunks");
    }
    HandoffChunkRef ref;
    std::string why;
    if (!ParseLine(line, geometry, &ref, &why))
      return Status(HANDOFF_E_INVALID_ARGUMENT, where + why);
    order->push_back(ref);
  }
  if (ferror(f.get())) return Status(HANDOFF_E_IO, path + ": read error");
  return Status::Ok();
}

}  // namespace handoff
