// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff base create / base info / base verify.
#include <cstdio>

#include "cli.h"

namespace handoff_cli {
namespace {

std::string RegionsJson(const HandoffBase* base) {
  std::string out = "[";
  for (size_t i = 0; i < handoff_base_region_count(base); i++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, i, &info);
    Json j;
    j.Add("name", info.name)
        .Add("kind", info.kind == HANDOFF_REGION_DISK ? "disk" : "memory")
        .Add("size", info.size)
        .Add("file", handoff_base_region_file(base, i));
    out += (i ? ", " : "") + j.str();
  }
  return out + "]";
}

int PrintBase(const HandoffBase* base, double seconds, const char* timing,
              bool json) {
  uint8_t id[16];
  uint64_t chunks = 0, distinct = 0;
  handoff_base_id(base, id);
  handoff_base_counts(base, &chunks, &distinct);
  if (json) {
    Json j;
    j.Add("id", Hex(id, 16))
        .Add("chunks", chunks)
        .Add("distinct_chunks", distinct)
        .Add(timing, seconds)
        .AddRaw("regions", RegionsJson(base));
    printf("%s\n", j.str().c_str());
    return 0;
  }
  printf("base id      %s\n", Hex(id, 16).c_str());
  printf("chunks       %llu (%llu distinct non-zero)\n",
         static_cast<unsigned long long>(chunks),
         static_cast<unsigned long long>(distinct));
  printf("%-12s %.3f s\n", timing, seconds);
  for (size_t i = 0; i < handoff_base_region_count(base); i++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base, i, &info);
    printf("region %zu     %-16s %-6s %llu bytes  %s\n", i, info.name,
           info.kind == HANDOFF_REGION_DISK ? "disk" : "memory",
           static_cast<unsigned long long>(info.size),
           handoff_base_region_file(base, i));
  }
  return 0;
}

}  // namespace

int CmdBaseCreate(const Args& args) {
  std::vector<RegionArg> regions = ParseRegions(args);
  std::string out = args.Get("--output");
  if (regions.empty() || out.empty()) return Usage("base");
  std::vector<HandoffRegionSpec> specs;
  for (const RegionArg& r : regions)
    specs.push_back({r.name.c_str(), r.kind, r.path.c_str(), nullptr, 0});
  if (!args.Has("--quiet")) fprintf(stderr, "indexing base...\n");
  double t0 = NowSeconds();
  HandoffBase* base = nullptr;
  int rc = handoff_base_create(specs.data(), specs.size(), out.c_str(), &base);
  if (rc != 0) return Fail("base create", rc);
  double dt = NowSeconds() - t0;
  if (args.Has("--json") || !args.Has("--quiet"))
    PrintBase(base, dt, "index_seconds", args.Has("--json"));
  handoff_base_free(base);
  return 0;
}

int CmdBaseInfo(const Args& args) {
  if (args.positional().size() != 1) return Usage("base");
  double t0 = NowSeconds();
  BaseHandle base = OpenBase(args.positional()[0], "base info");
  if (!base) return 1;
  double dt = NowSeconds() - t0;
  PrintBase(base.get(), dt, "open_seconds", args.Has("--json"));
  return 0;
}

// Opening trusts the files' sizes; this reads every byte to prove the
// contents are still what the index (and so the base ID) says.
int CmdBaseVerify(const Args& args) {
  if (args.positional().size() != 1) return Usage("base");
  const bool json = args.Has("--json"), quiet = args.Has("--quiet");
  BaseHandle base = OpenBase(args.positional()[0], "base verify");
  if (!base) return 1;
  uint64_t bytes = 0;
  for (size_t i = 0; i < handoff_base_region_count(base.get()); i++) {
    HandoffRegionInfo info;
    handoff_base_region_info(base.get(), i, &info);
    bytes += info.size;
  }
  uint8_t id[16];
  handoff_base_id(base.get(), id);
  if (!quiet && !json)
    fprintf(stderr, "verifying %.1f MiB...\n", static_cast<double>(bytes) / 1048576.0);
  const double t0 = NowSeconds();
  const int rc = handoff_base_verify(base.get());
  const double seconds = NowSeconds() - t0;
  const double gbps = seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
  if (json) {
    Json j;
    j.Add("id", Hex(id, 16))
        .AddRaw("ok", rc == 0 ? "true" : "false")
        .Add("bytes", bytes)
        .Add("seconds", seconds)
        .Add("GBps", gbps);
    if (rc != 0) j.Add("error", handoff_last_error_message());
    printf("%s\n", j.str().c_str());
  } else if (!quiet && rc == 0) {
    printf("base id      %s\n", Hex(id, 16).c_str());
    printf("verified     %llu bytes in %.3f s (%.2f GB/s)\n",
           static_cast<unsigned long long>(bytes), seconds, gbps);
  }
  return rc == 0 ? 0 : Fail("base verify", rc);
}

}  // namespace handoff_cli
