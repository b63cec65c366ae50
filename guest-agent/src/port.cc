// SPDX-License-Identifier: GPL-2.0-or-later
#include "port.h"

#include <dirent.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

namespace handoff_agent {

std::string FindPort(const std::string& name) {
  const std::string sys = "/sys/class/virtio-ports";
  DIR* dir = opendir(sys.c_str());
  if (dir == nullptr) return "";
  std::string found;
  while (dirent* e = readdir(dir)) {
    std::ifstream f(sys + "/" + e->d_name + "/name");
    std::string port_name;
    if (f && std::getline(f, port_name) && port_name == name) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  closedir(dir);
  return found;
}

namespace {

// Waits until @fd is ready for @events; false when the host end is closed.
// (virtio_console reports POLLHUP for that, and reads then return 0.)
bool Wait(int fd, short events) {
  pollfd p = {fd, events, 0};
  for (;;) {
    int n = poll(&p, 1, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (p.revents & events) return true;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return false;
  }
}

}  // namespace

bool ReadFully(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!Wait(fd, POLLIN)) return false;
      continue;
    }
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteFully(int fd, const void* buf, size_t len) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!Wait(fd, POLLOUT)) return false;
      continue;
    }
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace handoff_agent
