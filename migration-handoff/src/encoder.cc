// SPDX-License-Identifier: GPL-2.0-or-later
#include "encoder.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "format.h"
#include "record.h"

namespace handoff {
namespace {

ControllerConfig MakeControllerConfig(const HandoffEncoderConfig& c) {
  ControllerConfig cc;
  if (c.adaptive) {
    cc.modes = DefaultModes();
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
      controller_(MakeControllerConfig(config)) {}

Encoder::~Encoder() { pipeline_.reset(); }

double Encoder::Now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                       start_)
      .count();
}

Status Encoder::Create(const Base* base, const HandoffEncoderConfig& config_in,
                       std::unique_ptr<Encoder>* out) {
  HandoffEncoderConfig config = config_in;
  if (config.threads == 0)
    config.threads = std::max(1u, std::thread::hardware_concurrency());
  if (config.frame_bytes == 0) config.frame_bytes = 256 * 1024;
  if (config.frame_bytes < kChunkSize || config.frame_bytes > kMaxPlainLength / 2)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "frame_bytes must be within 4096..4 MiB");
  if (config.queue_frames == 0) config.queue_frames = 2 * config.threads + 2;
  if (!CodecLevelValid(config.mode.codec, config.mode.level))
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "mode level " + std::to_string(config.mode.level) +
                      " not valid for codec " + CodecName(config.mode.codec));
  if (config.mode.delta == HANDOFF_DELTA_PREFIX &&
      config.mode.codec != HANDOFF_CODEC_ZSTD)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "prefix delta needs zstd");
  if (config.mode.delta < HANDOFF_DELTA_NONE ||
      config.mode.delta > HANDOFF_DELTA_PREFIX)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "unknown delta mode");

  std::unique_ptr<Encoder> enc(new Encoder(base, config));
  const uint64_t total = base->geometry().total_chunks();
  enc->last_seq_.assign(total, 0);
  enc->differs_.assign(total, 0);
  // Rehashing a large table stalls the producer; start with room for a
  // quarter of the geometry.
  enc->self_.reserve(static_cast<size_t>(std::min<uint64_t>(total / 4, 1u << 22)));
  Encoder* self = enc.get();
  enc->pipeline_ = std::make_unique<Pipeline>(
      base, config.threads, config.queue_frames, [self](const FrameJob& job) {
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

Status Encoder::BeginIteration(uint32_t iteration) {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  if (iteration <= iteration_)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "iteration " + std::to_string(iteration) +
                      " not above the current " + std::to_string(iteration_));
  iteration_ = iteration;
  StartFrameIfNeeded();
  AppendRecordHeader(&frame_->plain, RecordType::kIteration, 0, 0, iteration_,
                     NextSeq(), 0);
  frame_->records++;
  per_type_[static_cast<size_t>(RecordType::kIteration) - 1]++;
  records_++;
  return Status::Ok();
}

Status Encoder::Submit(uint32_t region, uint64_t index,
                       const uint8_t* live_data) {
  if (finished_) return Status(HANDOFF_E_STATE, "encoder already finished");
  const Geometry& g = base_->geometry();
  if (!g.Contains(region, index))
    return Status(HANDOFF_E_CHUNK_RANGE,
                  "chunk " + std::to_string(index) + " of region " +
                      std::to_string(region) + " outside the geometry");
  // A running guest may write the page while we look at it. Every decision
  // below must concern the same bytes that are sent, or a self reference
  // could point at content that differs from its hash: take one snapshot,
  // straight into the frame where a DATA record would carry it, and cut it
  // off again if the chunk becomes another record.
  StartFrameIfNeeded();
  std::string& plain = frame_->plain;
  const size_t mark = plain.size();
  plain.append(kRecordHeaderSize, '\0');
  plain.append(reinterpret_cast<const char*>(live_data), kChunkSize);
  const uint8_t* data =
      reinterpret_cast<const uint8_t*>(plain.data()) + mark + kRecordHeaderSize;
  const uint64_t global = g.Global(region, index);
  const uint8_t* same = base_->Chunk(region, index);
  // Appends a record header for this chunk after dropping the snapshot.
  auto add = [&](RecordType type) {
    plain.resize(mark);
    uint64_t seq = NextSeq();
    AppendRecordHeader(&plain, type, static_cast<uint8_t>(region), 0,
                       iteration_, seq, index);
    frame_->records++;
    per_type_[static_cast<size_t>(type) - 1]++;
    records_++;
    last_seq_[global] = seq;
    return seq;
  };
  auto done = [&] {
    return plain.size() >= config_.frame_bytes ? FlushFrame() : Status::Ok();
  };

  // ZERO, and SAME: the destination already holds these bytes.
  const bool zero = IsZeroChunk(data);
  const bool base_equal = std::memcmp(data, same, kChunkSize) == 0;
  if (!config_.dedup) {
    if (base_equal && !differs_[global]) {
      plain.resize(mark);
      chunks_[HANDOFF_REC_SAME]++;
      return Status::Ok();
    }
    return AddData(mark, region, index, global, nullptr);
  }
  if (zero || base_equal) {
    if (base_equal && !differs_[global]) {
      plain.resize(mark);
      chunks_[HANDOFF_REC_SAME]++;
      return Status::Ok();
    }
    if (zero) {
      add(RecordType::kZero);
      chunks_[HANDOFF_REC_ZERO]++;
    } else {
      add(RecordType::kBaseRef);
      AppendRef(&plain, static_cast<uint8_t>(region), index);
      chunks_[HANDOFF_REC_BASE_REF]++;
    }
    differs_[global] = !base_equal;
    return done();
  }

  const Hash128 h = HashChunk(data);
  uint64_t base_global;
  if (base_->Find(h, data, &base_global)) {
    uint32_t br;
    uint64_t bi;
    g.Locate(base_global, &br, &bi);
    add(RecordType::kBaseRef);
    AppendRef(&plain, static_cast<uint8_t>(br), bi);
    chunks_[HANDOFF_REC_BASE_REF]++;
    differs_[global] = 1;
    return done();
  }

  auto it = self_.find(h);
  if (it != self_.end() && last_seq_[it->second.global] == it->second.seq) {
    if (it->second.global == global) {
      // Resubmitted unchanged since it was sent: nothing to do.
      plain.resize(mark);
      chunks_[HANDOFF_REC_SAME]++;
      return Status::Ok();
    }
    const SelfEntry src = it->second;
    uint32_t sr;
    uint64_t si;
    g.Locate(src.global, &sr, &si);
    add(RecordType::kSelfRef);
    AppendSelfRef(&plain, static_cast<uint8_t>(sr), si, src.seq);
    chunks_[HANDOFF_REC_SELF_REF]++;
    differs_[global] = 1;
    return done();
  }

  return AddData(mark, region, index, global, &h);
}

// DATA: the snapshot at @mark stays; its header goes in front of it. XOR
// against the base is decided and applied by the worker (see EncodeFrame):
// the producer is the serial part of the pipeline. @h: the chunk's hash,
// for later self references (none without dedup).
Status Encoder::AddData(size_t mark, uint32_t region, uint64_t index,
                        uint64_t global, const Hash128* h) {
  std::string& plain = frame_->plain;
  const uint64_t seq = NextSeq();
  WriteRecordHeader(reinterpret_cast<uint8_t*>(plain.data()) + mark,
                    RecordType::kData, static_cast<uint8_t>(region), 0,
                    iteration_, seq, index);
  frame_->records++;
  per_type_[static_cast<size_t>(RecordType::kData) - 1]++;
  records_++;
  last_seq_[global] = seq;
  frame_->data_bytes += kChunkSize;
  if (frame_->mode.delta == HANDOFF_DELTA_PREFIX) frame_->prefix.push_back(global);
  if (h != nullptr) self_[*h] = SelfEntry{global, seq};
  chunks_[HANDOFF_REC_DATA]++;
  differs_[global] = 1;
  return plain.size() >= config_.frame_bytes ? FlushFrame() : Status::Ok();
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
  end.per_type = per_type_;
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
    input += s->chunks[k];
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
