// SPDX-License-Identifier: GPL-2.0-or-later
//
// Pipeline: worker threads compress frames in parallel while the output
// leaves in submission order. A submit waits while max_in_flight frames
// are between submission and emission (compressing, or compressed and
// waiting for an earlier frame), so memory is bounded and the producer
// waits about one frame's compression time. Encoded bytes nobody has
// pulled yet do not block it unless WaitForRoom is used.
#ifndef HANDOFF_PIPELINE_H
#define HANDOFF_PIPELINE_H

#include <xxhash.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base.h"
#include "frame_job.h"

namespace handoff {

class Pipeline {
 public:
  using OnFrameDone = std::function<void(const FrameJob&)>;

  Pipeline(const Base* base, size_t max_in_flight, OnFrameDone on_done);
  ~Pipeline();
  // Starts @workers threads; on failure none is left running.
  Status Start(unsigned workers);
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Queues a job. Raw jobs (job->raw) are emitted as they are.
  Status Submit(std::unique_ptr<FrameJob> job);
  // Waits while more than @limit emitted bytes are waiting to be pulled.
  Status WaitForRoom(uint64_t limit);
  // Waits until every submitted job has been emitted to the output.
  Status Drain();
  // Moves up to @cap emitted bytes into @buf. With @wait, blocks until some
  // are available, @done_hint() says nothing more will come, or no job is
  // pending (nothing would arrive without the producer).
  size_t Pull(uint8_t* buf, size_t cap, bool wait,
              const std::function<bool()>& done_hint);
  uint64_t pending() const;
  // Plaintext bytes submitted whose encoded bytes have not been emitted.
  uint64_t unencoded() const;
  uint64_t emitted() const;
  // XXH3-128 of everything emitted so far.
  void Digest(uint8_t out[16]) const;
  Status status() const;
  // Wakes pullers after the caller changed what done_hint() answers.
  void Notify();

 private:
  void Work();
  void EmitReadyLocked();
  void StopWorkers();

  const Base* base_;
  OnFrameDone on_done_;
  size_t max_in_flight_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;   // jobs to compress, or stop
  std::condition_variable space_cv_;  // room in flight, or all emitted
  std::condition_variable out_cv_;    // output available
  std::deque<FrameJob*> todo_;
  std::deque<std::unique_ptr<FrameJob>> order_;  // not yet emitted
  size_t in_flight_ = 0;  // submitted frames not yet emitted
  std::deque<std::string> output_;
  size_t output_offset_ = 0;
  uint64_t pending_ = 0;
  uint64_t unencoded_ = 0;
  uint64_t emitted_ = 0;
  XXH3_state_t* digest_ = nullptr;
  Status status_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace handoff

#endif  // HANDOFF_PIPELINE_H
