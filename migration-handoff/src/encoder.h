// SPDX-License-Identifier: GPL-2.0-or-later
//
// Encoder: writes what the classifier (dedup.h) makes of each submitted
// chunk as records, batches them into frames and hands those to the
// pipeline, asking the controller which mode each frame uses.
#ifndef HANDOFF_ENCODER_H
#define HANDOFF_ENCODER_H

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base.h"
#include "controller.h"
#include "dedup.h"
#include "handoff.h"
#include "pipeline.h"
#include "record.h"

namespace handoff {

class Encoder {
 public:
  static Status Create(const Base* base, const HandoffEncoderConfig& config,
                       std::unique_ptr<Encoder>* out);
  ~Encoder();

  Status BeginIteration(uint32_t iteration);
  Status Submit(uint32_t region, uint64_t index, const uint8_t* data);
  Status SubmitMany(uint32_t region, const uint8_t* region_data,
                    const uint64_t* indexes, size_t count, bool random_order);
  Status SubmitZeroRun(uint32_t region, uint64_t first, uint64_t count);
  Status Flush();
  Status Finish();
  Status Pull(uint8_t* buf, size_t cap, size_t* produced, bool wait);
  bool Done() const;
  // @bytes_queued: pulled by the caller, not on the link yet.
  void ReportNetwork(uint64_t bytes_sent, uint64_t bytes_queued,
                     uint64_t now_ns);
  void Stats(HandoffEncoderStats* stats) const;
  std::string DecisionLog() const;
  // Seconds since creation on the steady clock (CLOCK_MONOTONIC).
  double Now() const;

 private:
  Encoder(const Base* base, const HandoffEncoderConfig& config);
  void StartFrameIfNeeded();
  Status FlushFrame();
  // Counts @kind, just written to the current frame.
  void Counted(RecordKind kind);
  uint64_t NextSeq() { return ++seq_; }

  const Base* base_;
  HandoffEncoderConfig config_;
  std::chrono::steady_clock::time_point start_;

  mutable std::mutex controller_mu_;
  Controller controller_;
  bool have_net_clock_ = false;      // guarded by controller_mu_
  uint64_t net_clock_origin_ns_ = 0;
  double net_clock_origin_s_ = 0;

  // Producer state (one producer thread at a time).
  uint32_t iteration_ = 0;
  uint64_t seq_ = 0;
  uint64_t frame_seq_ = 0;
  std::unique_ptr<FrameJob> frame_;
  ChunkClassifier classifier_;
  bool finished_ = false;
  std::atomic<bool> complete_{false};  // end record queued

  std::atomic<uint64_t> chunks_[HANDOFF_REC_KINDS] = {};  // API slots
  std::atomic<uint64_t> xor_chunks_{0};
  std::atomic<uint64_t> plain_bytes_{0};
  std::atomic<uint64_t> frames_{0};
  std::atomic<uint64_t> worker_cpu_ns_{0};
  RecordCounts per_kind_;
  uint64_t records_ = 0;

  std::unique_ptr<Pipeline> pipeline_;  // last: joins before the rest dies
};

}  // namespace handoff

#endif  // HANDOFF_ENCODER_H
