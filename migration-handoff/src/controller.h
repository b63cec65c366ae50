// SPDX-License-Identifier: GPL-2.0-or-later
//
// Controller: picks the compression mode (codec x level x delta) that moves
// input fastest, given what the workers measure on the actual data and
// what the network reports. It is pure: no clock, no threads, no I/O; time
// comes in as arguments, so simulations drive it exactly like the encoder.
#ifndef HANDOFF_CONTROLLER_H
#define HANDOFF_CONTROLLER_H

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "handoff.h"
#include "mode.h"

namespace handoff {

struct ControllerConfig {
  std::vector<HandoffMode> modes;  // candidates, cheapest first
  size_t start_mode = 0;
  unsigned workers = 1;
  double decision_period_s = 0.5;
  double hysteresis = 0.10;        // switch only for this much gain
  double explore_share = 0.04;     // of worker time, for sampling modes
  double bandwidth_window_s = 0.5;
  size_t samples_per_mode = 8;     // sliding window per mode
  double stale_after_s = 10.0;     // resample a mode this old
};

struct FrameSample {
  size_t mode = 0;
  uint64_t input_bytes = 0;   // chunk bytes the frame carries
  uint64_t output_bytes = 0;  // bytes on the wire
  double cpu_s = 0;           // worker time spent compressing
  double time_s = 0;          // when it completed
};

struct Decision {
  double time_s;
  double bandwidth_Bps;
  size_t mode;
  double predicted_Bps;  // effective input throughput of that mode
};

class Controller {
 public:
  explicit Controller(ControllerConfig config);

  void OnFrame(const FrameSample& sample);
  // @bytes_sent is the running total; @backlogged tells whether the sender
  // had encoded bytes waiting, i.e. whether the link was the bottleneck.
  void OnNetwork(double time_s, uint64_t bytes_sent, bool backlogged);
  // Mode for the next frame: usually the current mode, sometimes one to
  // sample. Also where periodic decisions are taken.
  size_t NextFrameMode(double time_s);

  size_t current() const { return current_; }
  double bandwidth() const { return bandwidth_; }
  // Bytes/s the link actually carried over the window of the last
  // decision: unlike bandwidth(), never a probe beyond what was seen.
  double delivered() const { return delivered_; }
  // What the link is known to carry, never a probe (handoff.h, link_bps):
  // the rate of the last window in which it was the bottleneck, or what
  // it delivered in the last window if that was more (it got faster, or
  // was never the bottleneck); 0 before any report.
  double link_rate() const { return std::max(link_rate_, delivered_); }
  // Predicted effective input throughput of @mode, 0 if unmeasured.
  double Predicted(size_t mode) const;
  bool Measured(size_t mode) const { return !stats_[mode].samples.empty(); }
  const std::vector<Decision>& decisions() const { return decisions_; }
  const ControllerConfig& config() const { return config_; }
  uint64_t switches() const { return switches_; }

 private:
  struct ModeStats {
    std::deque<FrameSample> samples;
    double last_sample_s = -1;
    double cost_s_per_byte() const;
    double ratio() const;
  };
  struct NetSample {
    double t0, t1;
    uint64_t bytes;
    bool backlogged;
  };
  void Decide(double time_s);
  void UpdateBandwidth(double time_s);

  ControllerConfig config_;
  std::vector<ModeStats> stats_;
  size_t current_;
  double last_decision_s_ = 0;
  double bandwidth_ = 0;  // bytes/s; 0 = unknown
  double delivered_ = 0;  // bytes/s
  double link_rate_ = 0;  // bytes/s; 0 = never measured backlogged
  bool have_net_ = false;
  double last_net_t_ = 0;
  uint64_t last_net_bytes_ = 0;
  bool last_backlogged_ = false;
  std::deque<NetSample> net_;
  double explore_cpu_s_ = 0;
  std::vector<bool> exploring_;  // per mode: a sample is in flight
  std::vector<double> explore_guess_;
  std::vector<Decision> decisions_;
  uint64_t switches_ = 0;
};

// The engine's default candidate modes, cheapest first; without
// @allow_delta only those that send chunks whole.
std::vector<HandoffMode> DefaultModes(bool allow_delta = true);

}  // namespace handoff

#endif  // HANDOFF_CONTROLLER_H
