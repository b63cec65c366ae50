// SPDX-License-Identifier: GPL-2.0-or-later
#include "free_list.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace handoff_agent {

std::string ReadFreeList(const char* path, uint64_t page_size,
                         std::vector<HandoffAgentExtent>* out) {
  out->clear();
  // One open is one snapshot, taken under the zone locks.
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string(path) + ": " + strerror(errno);
  std::vector<uint64_t> words;
  uint64_t buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string why = std::string(path) + ": " + strerror(errno);
      close(fd);
      return why;
    }
    if (n == 0) break;
    words.insert(words.end(), buf, buf + n / sizeof(uint64_t));
  }
  close(fd);
  for (size_t i = 0; i + 1 < words.size(); i += 2)
    out->push_back({words[i] * page_size, words[i + 1] * page_size});
  Coalesce(out);
  return "";
}

void Coalesce(std::vector<HandoffAgentExtent>* extents) {
  std::sort(extents->begin(), extents->end(),
            [](const HandoffAgentExtent& a, const HandoffAgentExtent& b) {
              return a.gpa < b.gpa;
            });
  size_t w = 0;
  for (const HandoffAgentExtent& e : *extents) {
    if (e.bytes == 0) continue;
    if (w > 0 && (*extents)[w - 1].gpa + (*extents)[w - 1].bytes >= e.gpa) {
      HandoffAgentExtent& last = (*extents)[w - 1];
      last.bytes = std::max(last.gpa + last.bytes, e.gpa + e.bytes) - last.gpa;
    } else {
      (*extents)[w++] = e;
    }
  }
  extents->resize(w);
}

}  // namespace handoff_agent
