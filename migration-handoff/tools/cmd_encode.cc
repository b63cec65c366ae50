// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff encode: base + modified images -> stream file. A writer
// thread drains the encoder into the file (optionally paced to emulate a
// link) and reports progress as network progress, as QEMU's sender will.
#include <atomic>
#include <cstdio>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "cli.h"

namespace handoff_cli {

std::string EncoderStatsJson(const HandoffEncoderStats& s, double seconds);

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
      .Add("seconds", seconds)
      .Add("input_MBps", seconds > 0 ? s.input_bytes / seconds / 1e6 : 0.0);
  return j.str();
}

int CmdEncode(const Args& args) {
  std::string base_path = args.Get("--base"), out_path = args.Get("--output");
  std::vector<RegionArg> regions = ParseRegions(args);
  if (base_path.empty() || out_path.empty() || regions.empty()) return Usage("encode");
  bool quiet = args.Has("--quiet") || args.Has("--json");

  BaseHandle base_guard = OpenBase(base_path, "encode");
  HandoffBase* base = base_guard.get();
  if (base == nullptr) return 1;
  int rc;

  // Every base region needs its modified image, matched by name.
  size_t count = handoff_base_region_count(base);
  std::vector<std::unique_ptr<Image>> images(count);
  uint64_t total_bytes = 0;
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    const RegionArg* arg = FindRegion(regions, info.name, "encode", "image");
    if (arg == nullptr) return 1;
    images[r] = std::make_unique<Image>();
    std::string err;
    if (!images[r]->OpenRead(arg->path, &err)) {
      fprintf(stderr, "qemu-handoff encode: %s\n", err.c_str());
      return 1;
    }
    if (images[r]->size() != info.size) {
      fprintf(stderr,
              "qemu-handoff encode: '%s' is %llu bytes, region '%s' is %llu\n",
              arg->path.c_str(), (unsigned long long)images[r]->size(),
              info.name, (unsigned long long)info.size);
      return 1;
    }
    total_bytes += info.size;
  }

  // The outputs are created (truncated) while base and images are mapped.
  std::string log_path = args.Get("--decision-log");
  for (const std::string& path : {out_path, log_path}) {
    if (path.empty()) continue;
    if (!CheckNotBaseFile(base, base_path, path, "encode")) return 1;
    for (const RegionArg& r : regions) {
      if (SameFile(path, r.path)) {
        fprintf(stderr,
                "qemu-handoff encode: refusing to write '%s': it is the image "
                "of region '%s'\n",
                path.c_str(), r.name.c_str());
        return 1;
      }
    }
  }

  HandoffEncoderConfig cfg{};

  cfg.struct_size = sizeof(cfg);
  handoff_encoder_config_default(&cfg);
  cfg.threads = static_cast<unsigned>(args.GetInt("--threads", 0));
  cfg.frame_bytes = static_cast<uint32_t>(args.GetInt("--frame-kib", 256) * 1024);
  cfg.seed = static_cast<uint64_t>(args.GetInt("--seed", static_cast<long long>(cfg.seed)));
  cfg.adaptive = args.Has("--adaptive") || !args.Has("--codec");
  cfg.dedup = !args.Has("--no-dedup");
  // The writer thread pulls, so the producer may wait for the link.
  cfg.max_pending_bytes =
      static_cast<uint64_t>(args.GetInt("--max-pending-kib", 1024)) * 1024;
  std::string err;
  if (!ParseMode(args.Get("--codec", "zstd"), static_cast<int>(args.GetInt("--level", 1)),
                 args.Get("--delta", "none"), &cfg.mode, &err)) {
    fprintf(stderr, "qemu-handoff encode: %s\n", err.c_str());
    return 2;
  }
  HandoffEncoder* enc = nullptr;
  rc = handoff_encoder_create(base, &cfg, &enc);
  if (rc != 0) return Fail("encode", rc);
  std::unique_ptr<HandoffEncoder, void (*)(HandoffEncoder*)> enc_guard(
      enc, handoff_encoder_free);

  FILE* out = fopen(out_path.c_str(), "wb");
  if (out == nullptr) {
    perror(out_path.c_str());
    return 1;
  }
  double rate = args.GetDouble("--rate-mbit", 0) * 1e6 / 8;
  std::atomic<int> writer_rc{0};
  double t0 = NowSeconds();
  auto write_out = [&] {
    std::vector<uint8_t> buf(1 << 20);
    uint64_t sent = 0;
    Progress progress("encode", !quiet);
    for (;;) {
      size_t n = 0;
      // With a paced link, send at most 64 KiB at a time.
      size_t cap = rate > 0 ? 65536 : buf.size();
      int prc = handoff_encoder_pull_wait(enc, buf.data(), cap, &n);
      if (prc != 0) {
        writer_rc = prc;
        return;
      }
      if (n == 0 && handoff_encoder_done(enc)) break;
      if (n == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      // After a write error keep draining, so the producer never waits on
      // a link that is gone; the error is reported at the end.
      if (writer_rc == 0 && fwrite(buf.data(), 1, n, out) != n)
        writer_rc = HANDOFF_E_IO;
      sent += n;
      if (rate > 0) {
        double due = t0 + static_cast<double>(sent) / rate;
        double now = NowSeconds();
        if (due > now)
          std::this_thread::sleep_for(std::chrono::duration<double>(due - now));
      }
      handoff_encoder_report_network(enc, sent, NowNs());
      HandoffEncoderStats st{};
      st.struct_size = sizeof(st);
      handoff_encoder_stats(enc, &st);
      progress.Update(static_cast<double>(st.input_bytes) / 1048576.0,
                      static_cast<double>(total_bytes) / 1048576.0, "MiB");
    }
    progress.Done();
  };
  std::thread writer;
  try {
    writer = std::thread(write_out);
  } catch (const std::system_error& e) {
    fprintf(stderr, "qemu-handoff encode: cannot start writer thread: %s\n",
            e.what());
    fclose(out);
    return 1;
  }

  std::vector<uint64_t> indexes;
  for (size_t r = 0; r < count && rc == 0; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    indexes.resize(info.size / HANDOFF_CHUNK_SIZE);
    for (uint64_t i = 0; i < indexes.size(); i++) indexes[i] = i;
    bool random = info.kind == HANDOFF_REGION_MEMORY && !args.Has("--no-random");
    rc = handoff_encoder_submit_many(enc, static_cast<uint32_t>(r),
                                     images[r]->data(), indexes.data(),
                                     indexes.size(), random);
  }
  if (rc == 0) rc = handoff_encoder_finish(enc);
  if (rc != 0) {
    int saved = rc;
    // Unblock and stop the writer before reporting.
    handoff_encoder_finish(enc);
    writer.join();
    fclose(out);
    return Fail("encode", saved);
  }
  writer.join();
  double seconds = NowSeconds() - t0;
  if (fclose(out) != 0 || writer_rc != 0) {
    if (writer_rc != 0 && writer_rc != HANDOFF_E_IO) return Fail("encode", writer_rc);
    fprintf(stderr, "qemu-handoff encode: cannot write '%s'\n", out_path.c_str());
    return 1;
  }
  HandoffEncoderStats st{};
  st.struct_size = sizeof(st);
  handoff_encoder_stats(enc, &st);
  if (!log_path.empty()) {
    FILE* f = fopen(log_path.c_str(), "w");
    if (f != nullptr) {
      fputs("# t_s bandwidth_Bps codec level delta predicted_Bps\n", f);
      fputs(handoff_encoder_decision_log(enc), f);
      fclose(f);
    }
  }
  if (args.Has("--json")) {
    printf("%s\n", EncoderStatsJson(st, seconds).c_str());
    return 0;
  }
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
  return 0;
}

}  // namespace handoff_cli
