// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff decode: base + stream -> images. Each output starts as a
// copy of its base region and is mapped so the decoder writes in place.
#include <cstdio>
#include <memory>
#include <vector>

#include "cli.h"

namespace handoff_cli {

int CmdDecode(const Args& args) {
  std::string base_path = args.Get("--base"), in_path = args.Get("--input");
  std::vector<RegionArg> regions = ParseRegions(args);
  if (base_path.empty() || in_path.empty() || regions.empty()) return Usage("decode");
  bool quiet = args.Has("--quiet") || args.Has("--json");

  BaseHandle base_guard = OpenBase(base_path, "decode");
  HandoffBase* base = base_guard.get();
  if (base == nullptr) return 1;
  int rc;

  size_t count = handoff_base_region_count(base);
  std::vector<const RegionArg*> outputs(count);
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    outputs[r] = FindRegion(regions, info.name, "decode", "output");
    if (outputs[r] == nullptr) return 1;
  }
  // All checked before any is created: creating truncates.
  for (const RegionArg* arg : outputs)
    if (!CheckNotBaseFile(base, base_path, arg->path, "decode")) return 1;
  std::vector<std::unique_ptr<Image>> images(count);
  std::vector<void*> memory(count);
  for (size_t r = 0; r < count; r++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, r, &info);
    const RegionArg* arg = outputs[r];
    images[r] = std::make_unique<Image>();
    std::string err;
    if (!images[r]->Create(arg->path, info.size, &err)) {
      fprintf(stderr, "qemu-handoff decode: %s\n", err.c_str());
      return 1;
    }
    rc = handoff_base_read(base, r, 0, images[r]->data(), info.size);
    if (rc != 0) return Fail("decode", rc);
    memory[r] = images[r]->data();
  }

  HandoffDecoder* dec = nullptr;
  rc = handoff_decoder_create(base, nullptr, memory.data(), &dec);
  if (rc != 0) return Fail("decode", rc);
  std::unique_ptr<HandoffDecoder, void (*)(HandoffDecoder*)> dec_guard(
      dec, handoff_decoder_free);
  FILE* in = fopen(in_path.c_str(), "rb");
  if (in == nullptr) {
    perror(in_path.c_str());
    return 1;
  }
  fseek(in, 0, SEEK_END);
  double total = static_cast<double>(ftell(in));
  fseek(in, 0, SEEK_SET);
  std::vector<uint8_t> buf(1 << 20);
  double t0 = NowSeconds(), done = 0;
  Progress progress("decode", !quiet);
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), in)) > 0) {
    rc = handoff_decoder_feed(dec, buf.data(), n);
    if (rc != 0) break;
    done += static_cast<double>(n);
    progress.Update(done / 1048576.0, total / 1048576.0, "MiB");
  }
  progress.Done();
  fclose(in);
  if (rc == 0) rc = handoff_decoder_finish(dec);
  if (rc != 0) return Fail("decode", rc);
  for (auto& img : images) img->Sync();
  double seconds = NowSeconds() - t0;
  HandoffDecoderStats st{};
  st.struct_size = sizeof(st);
  handoff_decoder_stats(dec, &st);
  if (args.Has("--json")) {
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
    return 0;
  }
  printf("decoded   %.1f MiB stream in %.2f s, %llu frames\n",
         total / 1048576.0, seconds, (unsigned long long)st.frames);
  printf("records   zero %llu  base_ref %llu  self_ref %llu  data %llu  stale %llu\n",
         (unsigned long long)st.records[HANDOFF_REC_ZERO],
         (unsigned long long)st.records[HANDOFF_REC_BASE_REF],
         (unsigned long long)st.records[HANDOFF_REC_SELF_REF],
         (unsigned long long)st.records[HANDOFF_REC_DATA],
         (unsigned long long)st.stale_records);
  return 0;
}

}  // namespace handoff_cli
