// SPDX-License-Identifier: GPL-2.0-or-later
#include "workers.h"

#include <algorithm>
#include <cerrno>
#include <new>
#include <system_error>

namespace handoff {

unsigned DefaultWorkers() {
  return std::clamp(std::thread::hardware_concurrency(), 1u, kMaxThreads);
}

Status StartThread(std::vector<std::thread>* threads, std::function<void()> fn) {
  try {
    // Room first: once the thread runs, nothing may throw and drop it.
    threads->reserve(threads->size() + 1);
    threads->emplace_back(std::move(fn));
  } catch (const std::system_error& e) {
    // EAGAIN: out of threads, or of memory for a stack (RLIMIT_AS,
    // RLIMIT_NPROC, cgroup pids): a resource limit, like running out of
    // memory, rather than an engine fault.
    const int err = e.code().value();
    return Status(err == EAGAIN || err == ENOMEM ? HANDOFF_E_NO_MEMORY
                                                 : HANDOFF_E_INTERNAL,
                  std::string("cannot start worker thread: ") + e.what());
  } catch (const std::bad_alloc&) {
    return Status(HANDOFF_E_NO_MEMORY,
                  "cannot start worker thread: out of memory");
  }
  return Status::Ok();
}

Status RunParallel(unsigned n, const std::function<void(unsigned)>& fn) {
  std::vector<std::thread> threads;
  Status s;
  for (unsigned i = 1; i < n && s.ok(); i++)
    s = StartThread(&threads, [&fn, i] { fn(i); });
  if (s.ok() && n > 0) fn(0);
  for (auto& t : threads) t.join();
  return s;
}

}  // namespace handoff
