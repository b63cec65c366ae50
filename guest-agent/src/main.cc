// SPDX-License-Identifier: GPL-2.0-or-later
//
// handoff-agent: the qemu-handoff guest agent. Waits on its virtio-serial
// port for QEMU's requests and answers each with the guest's free memory,
// or, asked for page classes, with what every page frame holds
// (guest-agent/README.md, handoff_agent_protocol.h). Idle between
// requests: it costs the guest nothing while no handoff runs.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "free_list.h"
#include "handoff_agent_protocol.h"
#include "page_classes.h"
#include "port.h"

namespace handoff_agent {
namespace {

void Log(const char* fmt, auto... args) {
  std::fprintf(stderr, "handoff-agent: ");
  std::fprintf(stderr, fmt, args...);
  std::fputc('\n', stderr);
}

// Answers one request: a header and the extents, in one write each.
// @late_ms: the answer waits up to that long (at random) after the
// snapshot, as in a guest too busy to answer at once; tests use it to
// check that QEMU drops answers whose round is over.
bool Answer(int fd, const HandoffAgentRequest& req, const char* free_path,
            unsigned late_ms) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<HandoffAgentExtent> extents;
  std::string why = ReadFreeList(free_path, sysconf(_SC_PAGESIZE), &extents);
  if (late_ms)
    std::this_thread::sleep_for(std::chrono::milliseconds(
        static_cast<unsigned>(req.generation * 2654435761u) % (late_ms + 1)));
  if (!why.empty()) Log("%s: reporting no free memory", why.c_str());
  if (extents.size() > HANDOFF_AGENT_MAX_EXTENTS)
    extents.resize(HANDOFF_AGENT_MAX_EXTENTS);  // fewer is always safe
  HandoffAgentReport rep = {HANDOFF_AGENT_MAGIC, HANDOFF_AGENT_VERSION,
                            req.generation, extents.size()};
  if (!WriteFully(fd, &rep, sizeof(rep)) ||
      !WriteFully(fd, extents.data(), extents.size() * sizeof(extents[0])))
    return false;
  uint64_t bytes = 0;
  for (const HandoffAgentExtent& e : extents) bytes += e.bytes;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t0);
  Log("generation %llu: %zu extents, %llu MiB free, %lld ms",
      static_cast<unsigned long long>(req.generation), extents.size(),
      static_cast<unsigned long long>(bytes >> 20),
      static_cast<long long>(ms.count()));
  return true;
}

// Answers a page-class request: a header and one byte per page frame.
// @stall_ms: the map pauses that long halfway, as an agent that stopped
// midway would (tests: QEMU resets the port, and this answer is dropped).
bool AnswerClasses(int fd, const HandoffAgentRequest& req,
                   const char* free_path, unsigned stall_ms) {
  const uint64_t page_size = sysconf(_SC_PAGESIZE);
  std::vector<HandoffAgentExtent> free;
  std::vector<uint8_t> classes;
  std::string why = ReadFreeList(free_path, page_size, &free);
  if (!why.empty()) Log("%s: no page counted as free", why.c_str());
  why = ReadPageClasses(kPageFlagsPath, free, page_size, &classes);
  if (!why.empty()) Log("%s: reporting no page classes", why.c_str());
  HandoffAgentReport rep = {HANDOFF_AGENT_CLASSES_MAGIC, HANDOFF_AGENT_VERSION,
                            req.generation, classes.size()};
  const size_t half = stall_ms ? classes.size() / 2 : classes.size();
  if (!WriteFully(fd, &rep, sizeof(rep)) ||
      !WriteFully(fd, classes.data(), half))
    return false;
  std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms));
  if (!WriteFully(fd, classes.data() + half, classes.size() - half))
    return false;
  Log("page classes %llu: %zu pages",
      static_cast<unsigned long long>(req.generation), classes.size());
  return true;
}

int Serve(const std::string& port, const char* free_path, unsigned late_ms,
          unsigned stall_ms) {
  int fd = open(port.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    Log("%s: %s", port.c_str(), strerror(errno));
    return 1;
  }
  Log("serving on %s", port.c_str());
  for (;;) {
    HandoffAgentRequest req;
    if (!ReadFully(fd, &req, sizeof(req))) {
      // No host end connected (or it went away): wait for the next one.
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    bool written;
    if (req.version != HANDOFF_AGENT_VERSION) {
      written = true;
      Log("ignoring a request of version %u", req.version);
    } else if (req.magic == HANDOFF_AGENT_MAGIC) {
      written = Answer(fd, req, free_path, late_ms);
    } else if (req.magic == HANDOFF_AGENT_CLASSES_MAGIC) {
      written = AnswerClasses(fd, req, free_path, stall_ms);
      stall_ms = 0;  // the first answer only
    } else {
      written = true;
      Log("ignoring a request with magic %#x", req.magic);
    }
    if (!written)
      Log("generation %llu: the host end closed: answer dropped",
          static_cast<unsigned long long>(req.generation));
  }
}

}  // namespace
}  // namespace handoff_agent

int main(int argc, char** argv) {
  std::string port_name = HANDOFF_AGENT_PORT_NAME;
  const char* free_path = handoff_agent::kFreePagesPath;
  unsigned late_ms = 0, stall_ms = 0;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--port") && i + 1 < argc) {
      port_name = argv[++i];
    } else if (!std::strcmp(argv[i], "--free-pages") && i + 1 < argc) {
      free_path = argv[++i];
    } else if (!std::strcmp(argv[i], "--late-ms") && i + 1 < argc) {
      late_ms = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else if (!std::strcmp(argv[i], "--stall-ms") && i + 1 < argc) {
      stall_ms = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr,
                   "usage: handoff-agent [--port NAME] [--free-pages PATH] "
                   "[--late-ms MS] [--stall-ms MS]\n"
                   "Answers QEMU's free-memory (and page-class) requests on the "
                   "virtio-serial\nport NAME (default %s) with the snapshot of PATH "
                   "(default %s, from the handoff_free_pages module).\n"
                   "--late-ms: answer up to MS ms after the snapshot, as a "
                   "busy guest would (tests).\n"
                   "--stall-ms: pause the first page-class map halfway for "
                   "MS ms (tests).\n",
                   HANDOFF_AGENT_PORT_NAME, handoff_agent::kFreePagesPath);
      return 2;
    }
  }
  const std::string port = handoff_agent::FindPort(port_name);
  if (port.empty()) {
    handoff_agent::Log("no virtio-serial port named %s: nothing to do",
                       port_name.c_str());
    return 0;
  }
  return handoff_agent::Serve(port, free_path, late_ms, stall_ms);
}
