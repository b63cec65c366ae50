// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff decode: base + stream -> images. Each output starts as a
// copy of its base region and is mapped so the decoder writes in place.
#include <cstdio>
#include <memory>
#include <vector>

#include "cli.h"

namespace handoff_cli {
namespace {

// The output image of every base region, matched by name, created as a
// copy of the region and mapped writable.
struct Outputs {
  std::vector<std::unique_ptr<Image>> images;  // by base region
  std::vector<void*> memory;                   // their data, for the decoder
};

// 0, or the exit status after printing why. Nothing is created before
// every output has been checked: creating truncates.
int CreateOutputs(const HandoffBase* base, const std::string& base_path,
                  const std::vector<RegionArg>& regions, Outputs* out) {
  size_t count = handoff_base_region_count(base);
  std::vector<const RegionArg*> args(count);
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    args[r] = FindRegion(regions, info.name, "decode", "output");
    if (args[r] == nullptr) return 1;
  }
  for (const RegionArg* arg : args)
    if (!CheckNotBaseFile(base, base_path, arg->path, "decode")) return 1;
  out->images.resize(count);
  out->memory.resize(count);
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    auto& image = out->images[r];
    image = std::make_unique<Image>();
    std::string err;
    if (!image->Create(args[r]->path, info.size, &err)) {
      fprintf(stderr, "qemu-handoff decode: %s\n", err.c_str());
      return 1;
    }
    int rc = handoff_base_read(base, r, 0, image->data(), info.size);
    if (rc != 0) return Fail("decode", rc);
    out->memory[r] = image->data();
  }
  return 0;
}

// Feeds the stream in @in to the decoder, closes it and finishes the
// decoder: 0 or the engine's code. *@stream_bytes is the file's size,
// *@t0 when decoding started.
int FeedStream(HandoffDecoder* dec, FILE* in, bool quiet, double* stream_bytes,
               double* t0) {
  fseek(in, 0, SEEK_END);
  double total = static_cast<double>(ftell(in));
  fseek(in, 0, SEEK_SET);
  *stream_bytes = total;
  std::vector<uint8_t> buf(1 << 20);
  *t0 = NowSeconds();
  double done = 0;
  Progress progress("decode", !quiet);
  size_t n;
  int rc = 0;
  while ((n = fread(buf.data(), 1, buf.size(), in)) > 0) {
    rc = handoff_decoder_feed(dec, buf.data(), n);
    if (rc != 0) break;
    done += static_cast<double>(n);
    progress.Update(done / 1048576.0, total / 1048576.0, "MiB");
  }
  progress.Done();
  fclose(in);
  if (rc == 0) rc = handoff_decoder_finish(dec);
  return rc;
}

void Report(const HandoffDecoder* dec, bool json, double stream_bytes,
            double seconds) {
  HandoffDecoderStats st{};
  st.struct_size = sizeof(st);
  handoff_decoder_stats(dec, &st);
  if (json) {
    Json j;
    j.Add("frames", st.frames)
        .Add("stream_bytes", st.stream_bytes)
        .Add("plain_bytes", st.plain_bytes)
        .Add("zero_records", st.records[HANDOFF_REC_ZERO])
        .Add("base_ref_records", st.records[HANDOFF_REC_BASE_REF])
        .Add("self_ref_records", st.records[HANDOFF_REC_SELF_REF])
        .Add("data_records", st.records[HANDOFF_REC_DATA])
        .Add("stale_records", st.stale_records)
        .Add("iterations", static_cast<uint64_t>(st.iteration) + 1)
        .Add("seconds", seconds);
    printf("%s\n", j.str().c_str());
    return;
  }
  printf("decoded   %.1f MiB stream in %.2f s, %llu frames\n",
         stream_bytes / 1048576.0, seconds, (unsigned long long)st.frames);
  printf("records   zero %llu  base_ref %llu  self_ref %llu  data %llu  stale %llu\n",
         (unsigned long long)st.records[HANDOFF_REC_ZERO],
         (unsigned long long)st.records[HANDOFF_REC_BASE_REF],
         (unsigned long long)st.records[HANDOFF_REC_SELF_REF],
         (unsigned long long)st.records[HANDOFF_REC_DATA],
         (unsigned long long)st.stale_records);
}

}  // namespace

int CmdDecode(const Args& args) {
  std::string base_path = args.Get("--base"), in_path = args.Get("--input");
  std::vector<RegionArg> regions = ParseRegions(args);
  if (base_path.empty() || in_path.empty() || regions.empty()) return Usage("decode");
  bool quiet = args.Has("--quiet") || args.Has("--json");

  BaseHandle base = OpenBase(base_path, "decode");
  if (base == nullptr) return 1;
  Outputs outputs;
  if (int status = CreateOutputs(base.get(), base_path, regions, &outputs))
    return status;
  HandoffDecoder* dec = nullptr;
  int rc = handoff_decoder_create(base.get(), nullptr, outputs.memory.data(), &dec);
  if (rc != 0) return Fail("decode", rc);
  std::unique_ptr<HandoffDecoder, void (*)(HandoffDecoder*)> dec_guard(
      dec, handoff_decoder_free);
  FILE* in = fopen(in_path.c_str(), "rb");
  if (in == nullptr) {
    perror(in_path.c_str());
    return 1;
  }
  double stream_bytes = 0, t0 = 0;
  rc = FeedStream(dec, in, quiet, &stream_bytes, &t0);
  if (rc != 0) return Fail("decode", rc);
  for (auto& img : outputs.images) img->Sync();
  Report(dec, args.Has("--json"), stream_bytes, NowSeconds() - t0);
  return 0;
}

}  // namespace handoff_cli
