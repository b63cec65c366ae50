// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff encode: base + modified images -> stream file. A writer
// thread drains the encoder into the file (optionally paced to emulate a
// link) and reports progress as network progress, as QEMU's sender will.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "cli.h"

namespace handoff_cli {
namespace {

// What the command line asks of the command, beside the encoder's
// configuration (MakeConfig).
struct EncodeOptions {
  std::string base_path, out_path, log_path, order_path;
  std::vector<RegionArg> regions;
  bool quiet = false;
  bool json = false;
  bool random = true;   // memory chunks in a seeded random order
  double rate_Bps = 0;  // pace the file like a link; 0: as fast as it takes
  bool segmented = false;  // stream version 3 (segments, table, root)
};

// False when a required option is missing.
bool ParseOptions(const Args& args, EncodeOptions* o) {
  o->base_path = args.Get("--base");
  o->out_path = args.Get("--output");
  o->log_path = args.Get("--decision-log");
  o->regions = ParseRegions(args);
  o->json = args.Has("--json");
  o->quiet = args.Has("--quiet") || o->json;
  o->random = !args.Has("--no-random");
  o->rate_Bps = args.GetDouble("--rate-mbit", 0) * 1e6 / 8;
  o->segmented = args.Has("--segmented");
  o->order_path = args.Get("--order");
  if (!o->order_path.empty() && !o->segmented) return false;
  return !o->base_path.empty() && !o->out_path.empty() && !o->regions.empty();
}

// The modified image of every base region, matched by name and mapped.
struct Images {
  std::vector<std::unique_ptr<Image>> maps;  // by base region
  uint64_t total_bytes = 0;
};

// False after printing why.
bool OpenImages(const HandoffBase* base, const std::vector<RegionArg>& regions,
                Images* images) {
  size_t count = handoff_base_region_count(base);
  images->maps.resize(count);
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    const RegionArg* arg = FindRegion(regions, info.name, "encode", "image");
    if (arg == nullptr) return false;
    auto& image = images->maps[r];
    image = std::make_unique<Image>();
    std::string err;
    if (!image->OpenRead(arg->path, &err)) {
      fprintf(stderr, "qemu-handoff encode: %s\n", err.c_str());
      return false;
    }
    if (image->size() != info.size) {
      fprintf(stderr,
              "qemu-handoff encode: '%s' is %llu bytes, region '%s' is %llu\n",
              arg->path.c_str(), (unsigned long long)image->size(), info.name,
              (unsigned long long)info.size);
      return false;
    }
    images->total_bytes += info.size;
  }
  return true;
}

// False, after printing why, when the stream or the decision log would
// overwrite a base file or an input image.
bool CheckOutputs(const HandoffBase* base, const EncodeOptions& o) {
  for (const std::string& path : {o.out_path, o.log_path}) {
    if (path.empty()) continue;
    if (!CheckNotBaseFile(base, o.base_path, path, "encode")) return false;
    for (const RegionArg& r : o.regions) {
      if (SameFile(path, r.path)) {
        fprintf(stderr,
                "qemu-handoff encode: refusing to write '%s': it is the image "
                "of region '%s'\n",
                path.c_str(), r.name.c_str());
        return false;
      }
    }
  }
  return true;
}

// The compression options, through the engine's policy: --codec with
// --level and --delta name one mode, run exactly as named; without
// --codec, or with --adaptive, "auto". Returns 0 or the exit status after
// printing why.
int SetCompression(const Args& args, HandoffEncoderConfig* cfg) {
  const bool named = args.Has("--codec") && !args.Has("--adaptive");
  if (!named && (args.Has("--codec") || args.Has("--level") ||
                 args.Has("--delta"))) {
    fprintf(stderr,
            "qemu-handoff encode: --level and --delta need --codec, and "
            "--adaptive takes none of the three\n");
    return 2;
  }
  std::string mode = "auto";
  if (named) {
    mode = args.Get("--codec");
    if (mode != "none") mode += "-" + std::to_string(args.GetInt("--level", 1));
    const std::string delta = args.Get("--delta", "none");
    if (delta != "none") mode += "+" + delta;
  }
  if (handoff_encoder_config_set_compression(cfg, mode.c_str(),
                                             HANDOFF_DELTAS_AS_NAMED) == 0)
    return 0;
  fprintf(stderr, "qemu-handoff encode: %s\n", handoff_last_error_message());
  return 2;
}

// The encoder's configuration from the options; 0 or the exit status.
int MakeConfig(const Args& args, HandoffEncoderConfig* cfg) {
  *cfg = HandoffEncoderConfig{};
  cfg->struct_size = sizeof(*cfg);
  handoff_encoder_config_default(cfg);
  cfg->threads = static_cast<unsigned>(args.GetInt("--threads", 0));
  cfg->frame_bytes = static_cast<uint32_t>(args.GetInt("--frame-kib", 256) * 1024);
  cfg->seed = static_cast<uint64_t>(
      args.GetInt("--seed", static_cast<long long>(cfg->seed)));
  cfg->dedup = !args.Has("--no-dedup");
  cfg->segmented = args.Has("--segmented");
  // The writer thread pulls, so the producer may wait for the link.
  cfg->max_pending_bytes =
      static_cast<uint64_t>(args.GetInt("--max-pending-kib", 1024)) * 1024;
  return SetCompression(args, cfg);
}

// Drains the encoder into the output file on a thread of its own, paced
// like a link when asked, and reports what it wrote as network progress.
class StreamWriter {
 public:
  StreamWriter(HandoffEncoder* enc, FILE* out, const EncodeOptions& o,
               uint64_t total_bytes, double t0)
      : enc_(enc), out_(out), rate_Bps_(o.rate_Bps), progress_(!o.quiet),
        total_bytes_(total_bytes), t0_(t0) {}

  // False after printing why.
  bool Start() {
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      fprintf(stderr, "qemu-handoff encode: cannot start writer thread: %s\n",
              e.what());
      return false;
    }
    return true;
  }
  void Join() { thread_.join(); }
  // Ends the draining of a stream that will not be finished.
  void Stop() { stop_ = true; }
  // 0, the engine's code, or HANDOFF_E_IO when the file took no more.
  int rc() const { return rc_; }

 private:
  void Run();
  // Sleeps until a link of rate_Bps_ would have carried @sent bytes.
  void Pace(uint64_t sent) const;

  HandoffEncoder* const enc_;
  FILE* const out_;
  const double rate_Bps_;
  const bool progress_;
  const uint64_t total_bytes_;
  const double t0_;
  std::atomic<int> rc_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

void StreamWriter::Run() {
  uint64_t sent = 0;
  Progress progress("encode", progress_);
  // With a paced link, send at most 64 KiB at a time.
  int rc = DrainEncoder(enc_, rate_Bps_ > 0 ? 65536 : 1 << 20,
                        [&](const uint8_t* data, size_t n) {
    // After a write error keep draining, so the producer never waits on
    // a link that is gone; the error is reported at the end.
    if (rc_ == 0 && fwrite(data, 1, n, out_) != n) rc_ = HANDOFF_E_IO;
    sent += n;
    Pace(sent);
    handoff_encoder_report_network(enc_, sent, NowNs());
    HandoffEncoderStats st{};
    st.struct_size = sizeof(st);
    handoff_encoder_stats(enc_, &st);
    progress.Update(static_cast<double>(st.input_bytes) / 1048576.0,
                    static_cast<double>(total_bytes_) / 1048576.0, "MiB");
  }, &stop_);
  if (rc != 0) {
    rc_ = rc;
    return;
  }
  progress.Done();
}

void StreamWriter::Pace(uint64_t sent) const {
  if (rate_Bps_ <= 0) return;
  double due = t0_ + static_cast<double>(sent) / rate_Bps_;
  double now = NowSeconds();
  if (due > now)
    std::this_thread::sleep_for(std::chrono::duration<double>(due - now));
}

// Submits every chunk of every region (memory in random order unless
// told otherwise) and finishes the stream: 0 or the engine's code.
int SubmitImages(HandoffEncoder* enc, const HandoffBase* base,
                 const Images& images, bool random_memory) {
  int rc = 0;
  std::vector<uint64_t> indexes;
  for (size_t r = 0; r < images.maps.size() && rc == 0; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    indexes.resize(info.size / HANDOFF_CHUNK_SIZE);
    for (uint64_t i = 0; i < indexes.size(); i++) indexes[i] = i;
    bool random = info.kind == HANDOFF_REGION_MEMORY && random_memory;
    rc = handoff_encoder_submit_many(enc, static_cast<uint32_t>(r),
                                     images.maps[r]->data(), indexes.data(),
                                     indexes.size(), random);
  }
  return rc == 0 ? handoff_encoder_finish(enc) : rc;
}

std::string EncoderStatsJson(const HandoffEncoderStats& s, double seconds) {
  Json j;
  j.Add("zero_chunks", s.chunks[HANDOFF_REC_ZERO])
      .Add("same_chunks", s.chunks[HANDOFF_REC_SAME])
      .Add("base_ref_chunks", s.chunks[HANDOFF_REC_BASE_REF])
      .Add("self_ref_chunks", s.chunks[HANDOFF_REC_SELF_REF])
      .Add("data_chunks", s.chunks[HANDOFF_REC_DATA])
      .Add("xor_chunks", s.xor_chunks)
      .Add("input_bytes", s.input_bytes)
      .Add("plain_bytes", s.plain_bytes)
      .Add("output_bytes", s.output_bytes)
      .Add("frames", s.frames)
      .Add("mode", ModeString(s.mode))
      .Add("mode_switches", s.mode_switches)
      .Add("ratio", s.ratio)
      .Add("bandwidth_Bps", s.bandwidth_bps)
      .Add("link_Bps", s.link_bps)
      .Add("seconds", seconds)
      .Add("input_MBps", seconds > 0 ? s.input_bytes / seconds / 1e6 : 0.0);
  return j.str();
}

void PrintStats(const HandoffEncoderStats& st, double seconds) {
  printf("input     %.1f MiB in %.2f s (%.1f MB/s)\n", st.input_bytes / 1048576.0,
         seconds, st.input_bytes / seconds / 1e6);
  printf("output    %.1f MiB, ratio %.4f, %llu frames\n",
         st.output_bytes / 1048576.0, st.ratio, (unsigned long long)st.frames);
  printf("chunks    zero %llu  same %llu  base_ref %llu  self_ref %llu  data %llu (xor %llu)\n",
         (unsigned long long)st.chunks[HANDOFF_REC_ZERO],
         (unsigned long long)st.chunks[HANDOFF_REC_SAME],
         (unsigned long long)st.chunks[HANDOFF_REC_BASE_REF],
         (unsigned long long)st.chunks[HANDOFF_REC_SELF_REF],
         (unsigned long long)st.chunks[HANDOFF_REC_DATA],
         (unsigned long long)st.xor_chunks);
  printf("mode      %s (%llu switches)\n", ModeString(st.mode).c_str(),
         (unsigned long long)st.mode_switches);
}

// The decision log, if asked for, and the statistics on stdout; a
// segmented stream's root, which a receiver checks its table against.
int Report(HandoffEncoder* enc, const EncodeOptions& o, double seconds) {
  HandoffEncoderStats st{};
  st.struct_size = sizeof(st);
  handoff_encoder_stats(enc, &st);
  std::string root;
  uint8_t digest[HANDOFF_ROOT_SIZE];
  if (o.segmented && handoff_encoder_segment_root(enc, digest) == 0)
    root = Hex(digest, sizeof(digest));
  if (!o.log_path.empty()) {
    FILE* f = fopen(o.log_path.c_str(), "w");
    if (f != nullptr) {
      fputs("# t_s bandwidth_Bps codec level delta predicted_Bps\n", f);
      fputs(handoff_encoder_decision_log(enc), f);
      fclose(f);
    }
  }
  std::string json = EncoderStatsJson(st, seconds);
  if (!root.empty()) json.insert(json.size() - 1, ", \"root\": \"" + root + "\"");
  if (o.json)
    printf("%s\n", json.c_str());
  else
    PrintStats(st, seconds);
  if (!o.json && !root.empty()) printf("root      %s\n", root.c_str());
  return 0;
}

// Removes what a failed encode wrote, so that no partial stream is left
// where a stream is expected: a regular file only (not /dev/null, a pipe).
void DiscardOutput(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
      unlink(path.c_str()) != 0)
    perror(path.c_str());
}

// Encodes the images into the output file and reports: the exit status.
// A failure leaves no output file.
int WriteStream(HandoffEncoder* enc, const HandoffBase* base,
                const Images& images, const EncodeOptions& o) {
  FILE* out = fopen(o.out_path.c_str(), "wb");
  if (out == nullptr) {
    perror(o.out_path.c_str());
    return 1;
  }
  const double t0 = NowSeconds();
  StreamWriter writer(enc, out, o, images.total_bytes, t0);
  if (!writer.Start()) {
    fclose(out);
    DiscardOutput(o.out_path);
    return 1;
  }
  int rc = SubmitImages(enc, base, images, o.random);
  if (rc != 0) {
    // Report why, after stopping the writer. A failed finish has told it
    // already; after a failed submission the stream is not finished: that
    // would end it as if the chunks not given were the base's.
    const std::string why = handoff_last_error_message();
    writer.Stop();
    writer.Join();
    fclose(out);
    DiscardOutput(o.out_path);
    fprintf(stderr, "qemu-handoff encode: %s\n",
            why.empty() ? handoff_error_name(rc) : why.c_str());
    return 1;
  }
  writer.Join();
  double seconds = NowSeconds() - t0;
  if (fclose(out) != 0 || writer.rc() != 0) {
    DiscardOutput(o.out_path);
    if (writer.rc() != 0 && writer.rc() != HANDOFF_E_IO)
      return Fail("encode", writer.rc());
    fprintf(stderr, "qemu-handoff encode: cannot write '%s'\n",
            o.out_path.c_str());
    return 1;
  }
  return Report(enc, o, seconds);
}

}  // namespace

int CmdEncode(const Args& args) {
  EncodeOptions o;
  if (!ParseOptions(args, &o)) return Usage("encode");
  BaseHandle base = OpenBase(o.base_path, "encode");
  if (base == nullptr) return 1;
  Images images;
  if (!OpenImages(base.get(), o.regions, &images)) return 1;
  // The outputs are created (truncated) while base and images are mapped.
  if (!CheckOutputs(base.get(), o)) return 1;
  HandoffEncoderConfig cfg;
  if (int status = MakeConfig(args, &cfg)) return status;
  // Read by handoff_encoder_create; the engine's reader, as QEMU's.
  std::unique_ptr<HandoffChunkRef, void (*)(HandoffChunkRef*)> order(
      nullptr, handoff_chunk_refs_free);
  if (!o.order_path.empty()) {
    HandoffChunkRef* refs = nullptr;
    size_t count = 0;
    if (handoff_order_file_read(base.get(), o.order_path.c_str(), &refs,
                                &count) != 0) {
      fprintf(stderr, "qemu-handoff encode: --order %s\n",
              handoff_last_error_message());
      return 1;
    }
    order.reset(refs);
    cfg.order = refs;
    cfg.order_count = count;
  }
  HandoffEncoder* enc = nullptr;
  int rc = handoff_encoder_create(base.get(), &cfg, &enc);
  if (rc != 0) return Fail("encode", rc);
  std::unique_ptr<HandoffEncoder, void (*)(HandoffEncoder*)> enc_guard(
      enc, handoff_encoder_free);
  return WriteStream(enc, base.get(), images, o);
}

}  // namespace handoff_cli
