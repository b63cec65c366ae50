// SPDX-License-Identifier: GPL-2.0-or-later
#include "pipeline.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "workers.h"

namespace handoff {

Pipeline::Pipeline(const Base* base, size_t max_in_flight, OnFrameDone on_done)
    : base_(base),
      on_done_(std::move(on_done)),
      max_in_flight_(std::max<size_t>(1, max_in_flight)),
      digest_(XXH3_createState()) {
  if (digest_ != nullptr) XXH3_128bits_reset(digest_);
}

Pipeline::~Pipeline() {
  StopWorkers();
  XXH3_freeState(digest_);
}

Status Pipeline::Start(unsigned workers) {
  if (digest_ == nullptr) return Status(HANDOFF_E_NO_MEMORY, "XXH3_createState");
  for (unsigned i = 0; i < std::max(1u, workers); i++) {
    Status s = StartThread(&threads_, [this] { Work(); });
    if (!s.ok()) {
      StopWorkers();
      return s;
    }
  }
  return Status::Ok();
}

void Pipeline::StopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

Status Pipeline::Submit(std::unique_ptr<FrameJob> job) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!status_.ok()) return status_;
  if (!job->raw) {
    space_cv_.wait(lock, [&] {
      return in_flight_ < max_in_flight_ || !status_.ok();
    });
    if (!status_.ok()) return status_;
    in_flight_++;
    job->counted = true;
    job->queued_plain = job->plain.size();
    unencoded_ += job->queued_plain;
    todo_.push_back(job.get());
    work_cv_.notify_one();
  }
  order_.push_back(std::move(job));
  EmitReadyLocked();
  return Status::Ok();
}

void Pipeline::Work() {
  Compressor compressor;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !todo_.empty(); });
    if (stop_) return;
    FrameJob* job = todo_.front();
    todo_.pop_front();
    lock.unlock();
    // An exception leaving a thread's function terminates the process:
    // a failed allocation becomes the job's error instead.
    try {
      EncodeFrame(*base_, &compressor, job);
      if (job->status.ok() && on_done_) on_done_(*job);
    } catch (const std::bad_alloc&) {
      job->status = Status(HANDOFF_E_NO_MEMORY, "out of memory encoding a frame");
    } catch (const std::exception& e) {
      job->status = Status(HANDOFF_E_INTERNAL, e.what());
    }
    lock.lock();
    job->raw = true;  // now final bytes
    if (!job->status.ok() && status_.ok()) status_ = job->status;
    EmitReadyLocked();
    space_cv_.notify_all();
  }
}

void Pipeline::EmitReadyLocked() {
  bool any = false;
  while (!order_.empty() && order_.front()->raw) {
    std::unique_ptr<FrameJob> job = std::move(order_.front());
    order_.pop_front();
    // A frame holds its place until emitted, not just until compressed:
    // finished frames waiting behind a slow one count too, so memory stays
    // bounded by max_in_flight_ frames.
    if (job->counted) in_flight_--;
    unencoded_ -= job->queued_plain;
    XXH3_128bits_update(digest_, job->bytes.data(), job->bytes.size());
    pending_ += job->bytes.size();
    emitted_ += job->bytes.size();
    if (!job->bytes.empty()) output_.push_back(std::move(job->bytes));
    any = true;
  }
  if (any) {
    out_cv_.notify_all();
    space_cv_.notify_all();
  }
}

Status Pipeline::WaitForRoom(uint64_t limit) {
  std::unique_lock<std::mutex> lock(mu_);
  space_cv_.wait(lock, [&] { return pending_ <= limit || !status_.ok(); });
  return status_;
}

Status Pipeline::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  space_cv_.wait(lock, [&] { return order_.empty() || !status_.ok(); });
  return status_;
}

size_t Pipeline::Pull(uint8_t* buf, size_t cap, bool wait,
                      const std::function<bool()>& done_hint) {
  std::unique_lock<std::mutex> lock(mu_);
  if (wait)
    out_cv_.wait(lock, [&] {
      return !output_.empty() || !status_.ok() || done_hint() ||
             order_.empty();
    });
  size_t n = 0;
  while (n < cap && !output_.empty()) {
    std::string& front = output_.front();
    size_t take = std::min(cap - n, front.size() - output_offset_);
    std::memcpy(buf + n, front.data() + output_offset_, take);
    n += take;
    output_offset_ += take;
    if (output_offset_ == front.size()) {
      output_.pop_front();
      output_offset_ = 0;
    }
  }
  pending_ -= n;
  if (n != 0) space_cv_.notify_all();
  return n;
}

uint64_t Pipeline::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pending_;
}

uint64_t Pipeline::unencoded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return unencoded_;
}

uint64_t Pipeline::emitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return emitted_;
}

void Pipeline::Digest(uint8_t out[16]) const {
  std::lock_guard<std::mutex> lock(mu_);
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(digest_));
  std::memcpy(out, c.digest, 16);
}

Status Pipeline::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Pipeline::Notify() {
  std::lock_guard<std::mutex> lock(mu_);
  out_cv_.notify_all();
}

}  // namespace handoff
