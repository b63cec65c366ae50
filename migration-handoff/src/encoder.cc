// SPDX-License-Identifier: GPL-2.0-or-later
#include "encoder.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>

#include "compression_policy.h"
#include "format.h"
#include "workers.h"

namespace handoff {
namespace {

ControllerConfig MakeControllerConfig(const HandoffEncoderConfig& c) {
  ControllerConfig cc;
  if (c.adaptive) {
    cc.modes = DefaultModes(c.allow_delta);
  }
  // The configured mode is the start (or only) mode.
  size_t start = cc.modes.size();
  for (size_t i = 0; i < cc.modes.size(); i++) {
    const HandoffMode& m = cc.modes[i];
    if (m.codec == c.mode.codec && m.level == c.mode.level &&
        m.delta == c.mode.delta)
      start = i;
  }
  if (start == cc.modes.size()) cc.modes.push_back(c.mode);
  cc.start_mode = start;
  cc.workers = c.threads;
  return cc;
}

}  // namespace

Encoder::Encoder(const Base* base, const HandoffEncoderConfig& config)
    : base_(base),
      config_(config),
      start_(std::chrono::steady_clock::now()),
      controller_(MakeControllerConfig(config)),
      classifier_(base, config.dedup) {}

Encoder::~Encoder() { pipeline_.reset(); }

double Encoder::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       start_)
      .count();
}

Status Encoder::Create(const Base* base, const HandoffEncoderConfig& config_in,
                       std::unique_ptr<Encoder>* out) {
  HandoffEncoderConfig config = config_in;
  if (config.threads == 0) config.threads = DefaultWorkers();
  if (config.threads > kMaxThreads)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "threads " + std::to_string(config.threads) +
                      " above HANDOFF_MAX_THREADS (" +
                      std::to_string(kMaxThreads) + ")");
  if (config.frame_bytes == 0) config.frame_bytes = 256 * 1024;
  if (config.frame_bytes < kChunkSize || config.frame_bytes > kMaxPlainLength / 2)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "frame_bytes must be within 4096..4 MiB");
  if (config.queue_frames == 0) config.queue_frames = 2 * config.threads + 2;
  // The mode was decided by the compression policy (or by a caller that
  // filled the struct itself): only its invariants are checked here.
  HANDOFF_RETURN_IF_ERROR(CheckCompression(config));

  std::unique_ptr<Encoder> enc(new Encoder(base, config));
  Encoder* self = enc.get();
  enc->pipeline_ = std::make_unique<Pipeline>(
      base, config.queue_frames, [self](const FrameJob& job) {
        self->worker_cpu_ns_ += static_cast<uint64_t>(job.cpu_s * 1e9);
        self->xor_chunks_ += job.xor_chunks;
        if (job.data_bytes == 0) return;
        FrameSample s;
        s.mode = job.mode_index;
        s.input_bytes = job.data_bytes;
        s.output_bytes = job.bytes.size();
        s.cpu_s = job.cpu_s;
        s.time_s = self->Now();
        std::lock_guard<std::mutex> lock(self->controller_mu_);
        self->controller_.OnFrame(s);
      });
  HANDOFF_RETURN_IF_ERROR(enc->pipeline_->Start(config.threads));
  StreamHeader header;
  std::memcpy(header.base_id, base->id(), 16);
  header.geometry = base->geometry();
  auto job = std::make_unique<FrameJob>();
  job->raw = true;
  job->bytes = SerializeStreamHeader(header);
  HANDOFF_RETURN_IF_ERROR(enc->pipeline_->Submit(std::move(job)));
  *out = std::move(enc);
  return Status::Ok();
}

void Encoder::StartFrameIfNeeded() {
  if (frame_) return;
  frame_ = std::make_unique<FrameJob>();
  {
    std::lock_guard<std::mutex> lock(controller_mu_);
    frame_->mode_index = controller_.NextFrameMode(Now());
    frame_->mode = controller_.config().modes[frame_->mode_index];
  }
  // Room for the last record that crosses frame_bytes, plus the snapshot
  // of the next chunk, so that pointers into the plaintext stay valid.
  frame_->plain.reserve(config_.frame_bytes + 2 * (kChunkSize + kRecordHeaderSize) + 64);
}

Status Encoder::FlushFrame() {
  // An empty frame (only SAME chunks so far) stays for the next records:
  // frames are numbered when sent, so it leaves no gap.
  if (!frame_ || frame_->records == 0) return Status::Ok();
  frame_->frame_seq = frame_seq_++;
  if (config_.max_pending_bytes != 0)
    HANDOFF_RETURN_IF_ERROR(pipeline_->WaitForRoom(config_.max_pending_bytes));
  plain_bytes_ += frame_->plain.size();
  frames_++;
  return pipeline_->Submit(std::move(frame_));
}

void Encoder::Counted(RecordKind kind) {
  frame_->records++;
  per_kind_[kind]++;
  records_++;
}

Status Encoder::BeginIteration(uint32_t iteration) {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  if (iteration <= iteration_)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "iteration " + std::to_string(iteration) +
                      " not above the current " + std::to_string(iteration_));
  iteration_ = iteration;
  StartFrameIfNeeded();
  Record rec;
  rec.kind = RecordKind::kIteration;
  rec.iteration = iteration_;
  rec.seq = NextSeq();
  RecordWriter(&frame_->plain).Append(rec);
  Counted(rec.kind);
  return Status::Ok();
}

Status Encoder::Submit(uint32_t region, uint64_t index,
                       const uint8_t* live_data) {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  if (!base_->geometry().Contains(region, index))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunk " + std::to_string(index) + " of region " +
                      std::to_string(region) + " outside the geometry");
  // A running guest may write the page while we look at it. The decision
  // must concern the bytes that are sent, or a self reference could point
  // at content that differs from its hash: take one snapshot, straight
  // into the frame where a DATA record carries it, and drop it again if
  // the chunk becomes another record.
  StartFrameIfNeeded();
  RecordWriter writer(&frame_->plain);
  const size_t at = writer.Stage(live_data);
  const ChunkChoice choice = classifier_.Classify(region, index, writer.Staged(at));
  if (choice.same) {
    writer.Unstage(at);
    chunks_[HANDOFF_REC_SAME]++;
    return Status::Ok();
  }
  Record rec;
  rec.kind = choice.kind;
  rec.region = static_cast<uint8_t>(region);
  rec.iteration = iteration_;
  rec.seq = NextSeq();
  rec.index = index;
  rec.src_region = static_cast<uint8_t>(choice.src_region);
  rec.src_index = choice.src_index;
  rec.src_seq = choice.src_seq;
  if (rec.kind == RecordKind::kData) {
    // XOR against the base is decided and applied by the worker
    // (xor_delta.h): the producer is the serial part of the pipeline.
    writer.Commit(at, rec);
    frame_->data_bytes += kChunkSize;
    if (frame_->mode.delta == HANDOFF_DELTA_PREFIX)
      frame_->prefix.push_back(choice.global);
  } else {
    writer.Unstage(at);
    writer.Append(rec);
  }
  classifier_.Commit(choice, rec.seq);
  Counted(rec.kind);
  chunks_[ApiStatsSlot(rec.kind)]++;
  return frame_->plain.size() >= config_.frame_bytes ? FlushFrame()
                                                      : Status::Ok();
}

Status Encoder::SubmitZeroRun(uint32_t region, uint64_t first,
                              uint64_t count) {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  if (count == 0) return Status::Ok();
  const Geometry& g = base_->geometry();
  if (!g.Contains(region, first) || count - 1 > UINT64_MAX - first ||
      !g.Contains(region, first + count - 1))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "zero run of " + std::to_string(count) + " chunks from " +
                      std::to_string(first) + " of region " +
                      std::to_string(region) + " outside the geometry");
  StartFrameIfNeeded();
  Record rec;
  rec.kind = RecordKind::kZero;
  rec.flags = count > 1 ? kRecordFlagRun : 0;
  rec.count = count;
  rec.region = static_cast<uint8_t>(region);
  rec.iteration = iteration_;
  rec.seq = NextSeq();
  rec.index = first;
  RecordWriter(&frame_->plain).Append(rec);
  classifier_.CommitZeroRun(region, first, count, rec.seq);
  Counted(rec.kind);
  chunks_[HANDOFF_REC_ZERO_RUN] += count;
  return frame_->plain.size() >= config_.frame_bytes ? FlushFrame()
                                                      : Status::Ok();
}

Status Encoder::SubmitMany(uint32_t region, const uint8_t* region_data,
                           const uint64_t* indexes, size_t count,
                           bool random_order) {
  if (count == 0) return Status::Ok();
  if (region_data == nullptr || indexes == nullptr)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "null region data or indexes");
  std::vector<uint64_t> order(indexes, indexes + count);
  if (random_order) {
    // Fisher-Yates with a generator seeded per (seed, iteration, region),
    // so a run is reproducible and each iteration has its own order.
    std::mt19937_64 rng(config_.seed ^ (uint64_t{iteration_} << 32) ^
                        (uint64_t{region} * 0x9E3779B97F4A7C15ull));
    for (size_t i = count - 1; i > 0; i--) {
      size_t j = static_cast<size_t>(rng() % (i + 1));
      std::swap(order[i], order[j]);
    }
  }
  for (uint64_t idx : order) {
    if (!base_->geometry().Contains(region, idx))
      return Status(HANDOFF_E_CHUNK_RANGE,
                    "chunk " + std::to_string(idx) + " of region " +
                        std::to_string(region) + " outside the geometry");
    HANDOFF_RETURN_IF_ERROR(Submit(region, idx, region_data + (idx << kChunkShift)));
  }
  return Status::Ok();
}

Status Encoder::Flush() {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  return FlushFrame();
}

Status Encoder::Finish() {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  finished_ = true;
  HANDOFF_RETURN_IF_ERROR(FlushFrame());
  HANDOFF_RETURN_IF_ERROR(pipeline_->Drain());
  EndRecord end;
  end.frame_count = frame_seq_;
  end.record_count = records_;
  end.per_kind = per_kind_;
  end.plain_bytes = plain_bytes_;
  end.stream_bytes = pipeline_->emitted();
  pipeline_->Digest(end.digest);
  auto job = std::make_unique<FrameJob>();
  job->raw = true;
  job->bytes = SerializeEndRecord(end);
  HANDOFF_RETURN_IF_ERROR(pipeline_->Submit(std::move(job)));
  complete_ = true;
  pipeline_->Notify();
  return Status::Ok();
}

Status Encoder::Pull(uint8_t* buf, size_t cap, size_t* produced, bool wait) {
  *produced = pipeline_->Pull(buf, cap, wait, [this] { return complete_.load(); });
  return pipeline_->status();
}

bool Encoder::Done() const { return complete_ && pipeline_->pending() == 0; }

void Encoder::ReportNetwork(uint64_t bytes_sent, uint64_t bytes_queued,
                            uint64_t now_ns) {
  const uint64_t pending = pipeline_->pending();
  std::lock_guard<std::mutex> lock(controller_mu_);
  // A caller's queue always holds what is in flight on the link (up to a
  // round trip's worth); only a longer one means data waited for the link.
  // A quarter of a second of the delivered rate bounds any sane RTT. Not
  // of the estimate: while the controller probes upwards the estimate
  // outgrows any socket buffer, backlog could no longer show, and the
  // probe ran away (to 100 GB/s on a 35 Mbit/s link, choosing `none`).
  const double in_flight =
      std::max(64.0 * 1024, 0.25 * controller_.delivered());
  const bool backlogged =
      pending > 0 || static_cast<double>(bytes_queued) > in_flight;
  // The caller's clock may have any origin (QEMU passes its own): anchor
  // its first reading to ours and use only its differences after that.
  if (!have_net_clock_) {
    have_net_clock_ = true;
    net_clock_origin_ns_ = now_ns;
    net_clock_origin_s_ = Now();
  }
  double t = net_clock_origin_s_ +
             (now_ns >= net_clock_origin_ns_
                  ? static_cast<double>(now_ns - net_clock_origin_ns_) * 1e-9
                  : 0);
  controller_.OnNetwork(t, bytes_sent, backlogged);
}

void Encoder::Stats(HandoffEncoderStats* s) const {
  std::memset(s, 0, sizeof(*s));
  uint64_t input = 0;
  for (int k = 0; k < HANDOFF_REC_KINDS; k++) {
    s->chunks[k] = chunks_[k];
    // Zero runs are declared, not submitted: nothing of theirs was read.
    if (k != HANDOFF_REC_ZERO_RUN) input += s->chunks[k];
  }
  s->xor_chunks = xor_chunks_;
  s->input_bytes = input * kChunkSize;
  s->plain_bytes = plain_bytes_;
  s->output_bytes = pipeline_->emitted();
  s->frames = frames_;
  s->worker_cpu_seconds = static_cast<double>(worker_cpu_ns_.load()) * 1e-9;
  s->pending_bytes = pipeline_->pending();
  s->unencoded_bytes = pipeline_->unencoded();
  s->ratio = s->input_bytes ? static_cast<double>(s->output_bytes) /
                                  static_cast<double>(s->input_bytes)
                            : 0;
  std::lock_guard<std::mutex> lock(controller_mu_);
  s->mode = controller_.config().modes[controller_.current()];
  s->mode_switches = controller_.switches();
  s->bandwidth_bps = controller_.bandwidth();
  s->link_bps = controller_.link_rate();
  s->predicted_bps = controller_.Predicted(controller_.current());
}

std::string Encoder::DecisionLog() const {
  std::lock_guard<std::mutex> lock(controller_mu_);
  std::string out;
  char line[160];
  for (const Decision& d : controller_.decisions()) {
    const HandoffMode& m = controller_.config().modes[d.mode];
    snprintf(line, sizeof(line), "%.3f %.0f %s %d %d %.0f\n", d.time_s,
             d.bandwidth_Bps, CodecName(m.codec), m.level,
             static_cast<int>(m.delta), d.predicted_Bps);
    out += line;
  }
  return out;
}

}  // namespace handoff
