// SPDX-License-Identifier: GPL-2.0-or-later
//
// Worker threads that may fail to start. std::thread reports a failed
// pthread_create by throwing, and destroying a started, unjoined thread
// calls std::terminate: either would end QEMU. Here a failed start is a
// Status, and whoever started threads joins them before returning it.
#ifndef HANDOFF_WORKERS_H
#define HANDOFF_WORKERS_H

#include <functional>
#include <thread>
#include <vector>

#include "status.h"

namespace handoff {

// Threads a caller may ask for; beyond it a configuration is refused
// rather than trusted to mean what it says.
inline constexpr unsigned kMaxThreads = HANDOFF_MAX_THREADS;

// One worker per core, within kMaxThreads.
unsigned DefaultWorkers();

// Starts a thread running @fn and appends it to @threads.
Status StartThread(std::vector<std::thread>* threads, std::function<void()> fn);

// Runs @fn(0) .. @fn(@n - 1) in parallel: @fn(0) on the calling thread,
// the others on new threads, and returns when all have returned. When a
// thread cannot start, the ones started are joined and the error returned
// without running @fn(0). @fn must not throw.
Status RunParallel(unsigned n, const std::function<void(unsigned)>& fn);

}  // namespace handoff

#endif  // HANDOFF_WORKERS_H
