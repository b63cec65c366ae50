// SPDX-License-Identifier: GPL-2.0-or-later
#include "controller.h"

#include <algorithm>
#include <limits>

#include "codec.h"
#include "mode.h"

namespace handoff {

std::vector<HandoffMode> DefaultModes(bool allow_delta) {
  std::vector<HandoffMode> modes = {
      {HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_XOR},
      {HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_PREFIX},
      {HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_XOR},
      {HANDOFF_CODEC_ZLIB, 1, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 6, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 9, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 9, HANDOFF_DELTA_PREFIX},
      {HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_LZMA, 0, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 15, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_ZSTD, 19, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_LZMA, 6, HANDOFF_DELTA_NONE},
      {HANDOFF_CODEC_LZMA, 9, HANDOFF_DELTA_NONE},
  };
  if (!allow_delta)
    std::erase_if(modes, [](const HandoffMode& m) {
      return m.delta != HANDOFF_DELTA_NONE;
    });
  return modes;
}

double Controller::ModeStats::cost_s_per_byte() const {
  double cpu = 0, in = 0;
  for (const FrameSample& s : samples) {
    cpu += s.cpu_s;
    in += static_cast<double>(s.input_bytes);
  }
  return in > 0 ? cpu / in : 0;
}

double Controller::ModeStats::ratio() const {
  double out = 0, in = 0;
  for (const FrameSample& s : samples) {
    out += static_cast<double>(s.output_bytes);
    in += static_cast<double>(s.input_bytes);
  }
  return in > 0 ? out / in : 1;
}

Controller::Controller(ControllerConfig config)
    : config_(std::move(config)),
      stats_(config_.modes.size()),
      current_(std::min(config_.start_mode,
                        config_.modes.empty() ? 0 : config_.modes.size() - 1)),
      exploring_(config_.modes.size(), false),
      explore_guess_(config_.modes.size(), 0) {
  if (config_.workers == 0) config_.workers = 1;
}

void Controller::OnFrame(const FrameSample& s) {
  if (s.mode >= stats_.size() || s.input_bytes == 0) return;
  ModeStats& st = stats_[s.mode];
  st.samples.push_back(s);
  while (st.samples.size() > config_.samples_per_mode) st.samples.pop_front();
  st.last_sample_s = s.time_s;
  if (exploring_[s.mode]) {
    exploring_[s.mode] = false;
    explore_cpu_s_ += s.cpu_s - explore_guess_[s.mode];
  }
}

void Controller::OnNetwork(double t, uint64_t bytes, bool backlogged) {
  if (have_net_ && t > last_net_t_ && bytes >= last_net_bytes_) {
    net_.push_back({last_net_t_, t, bytes - last_net_bytes_, last_backlogged_});
  }
  have_net_ = true;
  last_net_t_ = t;
  last_net_bytes_ = bytes;
  last_backlogged_ = backlogged;
  while (!net_.empty() && net_.front().t1 < t - config_.bandwidth_window_s)
    net_.pop_front();
  // Network reports keep arriving while the producer is paused, so they
  // also keep the decision period.
  if (t - last_decision_s_ >= config_.decision_period_s) Decide(t);
}

void Controller::UpdateBandwidth(double t) {
  (void)t;
  double busy_t = 0, busy_b = 0, all_t = 0, all_b = 0;
  for (const NetSample& s : net_) {
    all_t += s.t1 - s.t0;
    all_b += static_cast<double>(s.bytes);
    if (s.backlogged) {
      busy_t += s.t1 - s.t0;
      busy_b += static_cast<double>(s.bytes);
    }
  }
  if (all_t <= 0) return;
  delivered_ = all_b / all_t;
  if (busy_t >= all_t * 0.5) {
    // The link was the bottleneck: what it carried is its capacity.
    bandwidth_ = busy_b / busy_t;
    link_rate_ = bandwidth_;
  } else {
    // The sender starved the link: its rate is only a lower bound, so
    // probe upwards (doubling per decision) until backlog appears.
    bandwidth_ = std::min(std::max(bandwidth_, delivered_) * 2, 1e11);
  }
}

double Controller::Predicted(size_t m) const {
  const ModeStats& st = stats_[m];
  if (st.samples.empty()) return 0;
  double cost = st.cost_s_per_byte();
  double compute = cost > 0 ? config_.workers / cost
                            : std::numeric_limits<double>::infinity();
  if (bandwidth_ <= 0) return compute;
  double net = bandwidth_ / std::max(st.ratio(), 1e-6);
  return std::min(compute, net);
}

void Controller::Decide(double t) {
  last_decision_s_ = t;
  UpdateBandwidth(t);
  if (bandwidth_ <= 0) return;  // nothing to weigh compute against yet
  size_t best = current_;
  double best_p = Predicted(current_);
  double cur_p = best_p;
  for (size_t m = 0; m < stats_.size(); m++) {
    double p = Predicted(m);
    if (p > best_p) {
      best = m;
      best_p = p;
    }
  }
  if (best != current_ && (cur_p <= 0 || best_p > cur_p * (1 + config_.hysteresis))) {
    current_ = best;
    switches_++;
  } else {
    best_p = cur_p;
  }
  decisions_.push_back({t, bandwidth_, current_, best_p});
}

size_t Controller::NextFrameMode(double t) {
  if (stats_.empty()) return 0;
  if (t - last_decision_s_ >= config_.decision_period_s) Decide(t);
  // Sample another mode when the time spent sampling stays within its
  // share of worker capacity; untried modes first, then the stalest.
  double budget = config_.explore_share * t * config_.workers;
  if (explore_cpu_s_ >= budget) return current_;
  size_t pick = stats_.size();
  double oldest = std::numeric_limits<double>::infinity();
  for (size_t m = 0; m < stats_.size(); m++) {
    if (m == current_ || exploring_[m]) continue;
    if (stats_[m].samples.empty()) {
      pick = m;
      break;
    }
    // Resampling is not free (a poor mode's frame costs wire bytes or
    // worker time), so only modes that recently came close are refreshed.
    if (t - stats_[m].last_sample_s > config_.stale_after_s &&
        stats_[m].last_sample_s < oldest &&
        Predicted(m) >= 0.5 * Predicted(current_)) {
      oldest = stats_[m].last_sample_s;
      pick = m;
    }
  }
  if (pick == stats_.size()) return current_;
  exploring_[pick] = true;
  // Charge a guess now, corrected when the sample completes, so that
  // several samples cannot start on one unspent budget.
  double guess = std::max(stats_[current_].cost_s_per_byte() * 262144 * 4,
                          1e-3);
  explore_guess_[pick] = guess;
  explore_cpu_s_ += guess;
  return pick;
}

}  // namespace handoff
