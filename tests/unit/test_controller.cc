// SPDX-License-Identifier: GPL-2.0-or-later
//
// The adaptive controller, driven by a simulated clock: workers compress
// frames at each mode's true cost and ratio (with noise), a link drains
// the output at a scripted bandwidth, and the controller sees only what the
// real encoder would report. It must follow bandwidth steps within 2 s and
// come within 10% of the best fixed mode at constant bandwidth.
#include <CUnit/Basic.h>

#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "controller.h"

namespace {

using handoff::Controller;
using handoff::ControllerConfig;
using handoff::FrameSample;

struct TrueMode {
  HandoffMode mode;
  double ns_per_byte;  // compute cost on one worker
  double ratio;        // output / input
};

// Shaped like the anchors' public codec tables, cheapest first.
const std::vector<TrueMode>& Modes() {
  static const std::vector<TrueMode> modes = {
      {{HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE}, 0.3, 1.00},
      {{HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_NONE}, 2.5, 0.35},
      {{HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_NONE}, 4.0, 0.32},
      {{HANDOFF_CODEC_ZSTD, 9, HANDOFF_DELTA_NONE}, 25.0, 0.29},
      {{HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_NONE}, 40.0, 0.33},
      {{HANDOFF_CODEC_ZSTD, 19, HANDOFF_DELTA_NONE}, 300.0, 0.25},
      {{HANDOFF_CODEC_LZMA, 6, HANDOFF_DELTA_NONE}, 350.0, 0.23},
  };
  return modes;
}

constexpr unsigned kWorkers = 2;
constexpr double kFrame = 256 * 1024;
constexpr double kDt = 0.001;
constexpr double kSendBuffer = 2 << 20;  // producer pauses above this

double Mbit(double m) { return m * 1e6 / 8; }

double TrueEffective(size_t m, double bandwidth) {
  const TrueMode& t = Modes()[m];
  return std::min(kWorkers / (t.ns_per_byte * 1e-9), bandwidth / t.ratio);
}

size_t BestMode(double bandwidth) {
  size_t best = 0;
  for (size_t m = 1; m < Modes().size(); m++)
    if (TrueEffective(m, bandwidth) > TrueEffective(best, bandwidth)) best = m;
  return best;
}

struct SimResult {
  double finish_s = 0;
  std::vector<size_t> mode_per_100ms;  // controller's current mode
  std::vector<handoff::Decision> decisions;
};

// Runs until @input bytes are sent (or @max_s). @fixed >= 0 pins a mode.
SimResult Simulate(const std::function<double(double)>& bandwidth,
                   double input, int fixed, double max_s) {
  ControllerConfig cfg;
  for (const TrueMode& t : Modes()) cfg.modes.push_back(t.mode);
  cfg.start_mode = 1;
  cfg.workers = kWorkers;
  Controller controller(cfg);

  struct Worker {
    bool busy = false;
    double left_s = 0;
    FrameSample sample;
  } workers[kWorkers];
  double remaining = input, pending = 0, sent = 0;
  uint64_t noise = 88172645463325252ull;
  auto jitter = [&] {
    noise ^= noise << 13;
    noise ^= noise >> 7;
    noise ^= noise << 17;
    return 0.95 + 0.1 * static_cast<double>(noise % 1000) / 1000.0;
  };
  SimResult r;
  long step = 0;
  for (double t = 0; t < max_s; t += kDt, step++) {
    for (Worker& w : workers) {
      if (w.busy) {
        w.left_s -= kDt;
        if (w.left_s <= 0) {
          w.busy = false;
          pending += static_cast<double>(w.sample.output_bytes);
          w.sample.time_s = t;
          controller.OnFrame(w.sample);
        }
      }
      if (!w.busy && remaining > 0 && pending < kSendBuffer) {
        size_t m = fixed >= 0 ? static_cast<size_t>(fixed)
                              : controller.NextFrameMode(t);
        double in = std::min(kFrame, remaining);
        remaining -= in;
        w.busy = true;
        w.sample.mode = m;
        w.sample.input_bytes = static_cast<uint64_t>(in);
        w.sample.cpu_s = Modes()[m].ns_per_byte * 1e-9 * in * jitter();
        w.sample.output_bytes =
            static_cast<uint64_t>(Modes()[m].ratio * in * jitter());
        w.left_s = w.sample.cpu_s;
      }
    }
    double drained = std::min(pending, bandwidth(t) * kDt);
    pending -= drained;
    sent += drained;
    if (step % 50 == 0)
      controller.OnNetwork(t, static_cast<uint64_t>(sent), pending > 0);
    if (step % 100 == 0) r.mode_per_100ms.push_back(controller.current());
    bool busy = false;
    for (const Worker& w : workers) busy = busy || w.busy;
    if (remaining <= 0 && !busy && pending <= 0) {
      r.finish_s = t;
      break;
    }
  }
  r.decisions = controller.decisions();
  return r;
}

bool GoodEnough(size_t mode, double bandwidth) {
  return TrueEffective(mode, bandwidth) >=
         0.9 * TrueEffective(BestMode(bandwidth), bandwidth);
}

void TestFollowsBandwidthSteps() {
  auto bw = [](double t) {
    return t < 20 ? Mbit(100) : t < 40 ? Mbit(5) : Mbit(50);
  };
  SimResult r = Simulate(bw, 1e12, -1, 60);
  CU_ASSERT_FATAL(r.mode_per_100ms.size() >= 600u);
  for (double step : {0.0, 20.0, 40.0}) {
    double b = bw(step + 0.01);
    // Index of the first 100 ms slot from which the choice stays good
    // until the next step.
    size_t end = static_cast<size_t>((step + 20) * 10);
    size_t settled = end;
    for (size_t i = end; i-- > static_cast<size_t>(step * 10);) {
      if (!GoodEnough(r.mode_per_100ms[i], b)) break;
      settled = i;
    }
    double delay = settled / 10.0 - step;
    printf("\n    step at %4.0f s to %5.1f Mbit/s: best %s, settled after %.1f s",
           step, b * 8 / 1e6,
           handoff::ModeName(Modes()[BestMode(b)].mode).c_str(), delay);
    CU_ASSERT(delay <= 2.0);
  }
  // Decisions are logged with time, bandwidth, mode and prediction.
  CU_ASSERT(r.decisions.size() >= 100);
  // At least every 0.5 s, give or take one 50 ms network report.
  double max_gap = 0;
  for (size_t i = 1; i < r.decisions.size(); i++)
    max_gap = std::max(max_gap, r.decisions[i].time_s - r.decisions[i - 1].time_s);
  printf("\n    %zu decisions, longest gap %.3f s", r.decisions.size(), max_gap);
  CU_ASSERT(max_gap <= 0.551);
}

void TestNearBestStaticMode() {
  for (double mbit : {5.0, 50.0, 100.0, 1000.0}) {
    double b = Mbit(mbit);
    // Enough input for about 30 s at the best mode.
    double input = 30 * TrueEffective(BestMode(b), b);
    auto bw = [b](double) { return b; };
    double best_static = 1e30;
    size_t best_m = 0;
    for (size_t m = 0; m < Modes().size(); m++) {
      double t = Simulate(bw, input, static_cast<int>(m), 3000).finish_s;
      if (t > 0 && t < best_static) {
        best_static = t;
        best_m = m;
      }
    }
    double adaptive = Simulate(bw, input, -1, 3000).finish_s;
    printf("\n    %6.0f Mbit/s: best static %s %.2f s, adaptive %.2f s (%+.1f%%)",
           mbit, handoff::ModeName(Modes()[best_m].mode).c_str(), best_static,
           adaptive, 100 * (adaptive / best_static - 1));
    CU_ASSERT(adaptive > 0);
    CU_ASSERT(adaptive <= best_static * 1.10);
  }
}

void TestNoDecisionWithoutBandwidth() {
  ControllerConfig cfg;
  for (const TrueMode& t : Modes()) cfg.modes.push_back(t.mode);
  cfg.start_mode = 1;
  Controller c(cfg);
  for (double t = 0; t < 5; t += 0.1) c.NextFrameMode(t);
  CU_ASSERT_EQUAL(c.current(), 1u);
  CU_ASSERT_EQUAL(c.switches(), 0u);
}

void TestHysteresisPreventsFlapping() {
  // Two modes within 5% of each other under noise: at most one switch.
  auto bw = [](double) { return Mbit(100); };
  SimResult r = Simulate(bw, 1e12, -1, 30);
  size_t switches = 0;
  for (size_t i = 1; i < r.mode_per_100ms.size(); i++)
    switches += r.mode_per_100ms[i] != r.mode_per_100ms[i - 1];
  printf("\n    switches in 30 s at constant 100 Mbit/s: %zu", switches);
  CU_ASSERT(switches <= 3);
}

}  // namespace

// handoff-delta off: the candidates are the same modes minus the deltas.
void TestCandidatesWithoutDelta() {
  size_t with_delta = 0;
  for (const HandoffMode& m : handoff::DefaultModes(true))
    with_delta += m.delta != HANDOFF_DELTA_NONE;
  CU_ASSERT(with_delta > 0);
  std::vector<HandoffMode> plain = handoff::DefaultModes(false);
  CU_ASSERT_EQUAL(plain.size() + with_delta, handoff::DefaultModes().size());
  for (const HandoffMode& m : plain)
    CU_ASSERT_EQUAL(m.delta, HANDOFF_DELTA_NONE);
}

int main() {
  if (CU_initialize_registry() != CUE_SUCCESS) return CU_get_error();
  CU_pSuite suite = CU_add_suite("controller", nullptr, nullptr);
  CU_add_test(suite, "follows bandwidth steps 100 -> 5 -> 50 Mbit/s",
              TestFollowsBandwidthSteps);
  CU_add_test(suite, "within 10% of the best static mode",
              TestNearBestStaticMode);
  CU_add_test(suite, "no decision without bandwidth",
              TestNoDecisionWithoutBandwidth);
  CU_add_test(suite, "hysteresis prevents flapping",
              TestHysteresisPreventsFlapping);
  CU_add_test(suite, "candidates without delta", TestCandidatesWithoutDelta);
  return test_run_registry();
}
