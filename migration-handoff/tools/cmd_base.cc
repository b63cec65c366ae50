// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff base create / base info.
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
        .Add("size", info.size);
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
    printf("region %zu     %-16s %-6s %llu bytes\n", i, info.name,
           info.kind == HANDOFF_REGION_DISK ? "disk" : "memory",
           static_cast<unsigned long long>(info.size));
  }
  return 0;
}

}  // namespace

int CmdBaseCreate(const Args& args) {
  std::vector<RegionArg> regions = ParseRegions(args);
  std::string out = args.Get("--output");
  if (regions.empty() || out.empty()) return Usage();
  std::vector<HandoffRegionSpec> specs;
  for (const RegionArg& r : regions)
    specs.push_back({r.name.c_str(), r.kind, r.path.c_str(), nullptr, 0});
  if (!args.Has("--quiet")) fprintf(stderr, "indexing base...\n");
  double t0 = NowSeconds();
  HandoffBase* base = nullptr;
  int rc = handoff_base_create(specs.data(), specs.size(), out.c_str(), &base);
  if (rc != 0) return Fail("base create", rc);
  double dt = NowSeconds() - t0;
  PrintBase(base, dt, "index_seconds", args.Has("--json"));
  handoff_base_free(base);
  return 0;
}

int CmdBaseInfo(const Args& args) {
  if (args.positional().size() != 1) return Usage();
  double t0 = NowSeconds();
  BaseHandle base = OpenBase(args.positional()[0], "base info");
  if (!base) return 1;
  double dt = NowSeconds() - t0;
  PrintBase(base.get(), dt, "open_seconds", args.Has("--json"));
  return 0;
}

}  // namespace handoff_cli
