// SPDX-License-Identifier: GPL-2.0-or-later
#include "proc_words.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace handoff_agent {

std::string ReadWords(const char* path, size_t max,
                      std::vector<uint64_t>* out) {
  out->clear();
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string(path) + ": " + strerror(errno);
  uint64_t buf[8192];
  while (out->size() < max) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string why = std::string(path) + ": " + strerror(errno);
      close(fd);
      return why;
    }
    if (n == 0) break;
    out->insert(out->end(), buf, buf + n / sizeof(uint64_t));
  }
  close(fd);
  if (out->size() > max) out->resize(max);
  return "";
}

}  // namespace handoff_agent
