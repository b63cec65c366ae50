// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff inspect: summary of a stream from its headers and end
// record alone — no base needed, nothing decompressed.
#include <cstdio>
#include <map>
#include <vector>

#include "cli.h"
#include "byte_io.h"
#include "format.h"

namespace handoff_cli {

int CmdInspect(const Args& args) {
  if (args.positional().size() != 1) return Usage();
  Image img;
  std::string err;
  if (!img.OpenRead(args.positional()[0], &err)) {
    fprintf(stderr, "qemu-handoff inspect: %s\n", err.c_str());
    return 1;
  }
  const uint8_t* p = img.data();
  size_t len = img.size();
  handoff::StreamHeader header;
  size_t pos = 0, needed = 0;
  handoff::Status s = handoff::ParseStreamHeader(p, len, &header, &pos, &needed);
  if (!s.ok()) {
    fprintf(stderr, "qemu-handoff inspect: %s\n", s.message().c_str());
    return 1;
  }
  struct CodecUse {
    uint64_t frames = 0, payload = 0, plain = 0;
  };
  std::map<std::string, CodecUse> uses;
  uint64_t frames = 0, prefix_frames = 0;
  handoff::EndRecord end;
  bool have_end = false;
  while (len - pos >= 4) {
    if (handoff::LoadLe<uint32_t>(p + pos) == handoff::kEndTag) {
      if (len - pos < handoff::kEndRecordSize) break;
      s = handoff::ParseEndRecord(p + pos, &end);
      have_end = s.ok();
      break;
    }
    if (len - pos < handoff::kFrameHeaderSize) break;
    handoff::FrameHeader h;
    s = handoff::ParseFrameHeader(p + pos, &h);
    if (!s.ok()) break;
    HandoffMode m = {static_cast<HandoffCodec>(h.codec), h.level,
                     (h.flags & handoff::kFrameFlagPrefix) ? HANDOFF_DELTA_PREFIX
                                                           : HANDOFF_DELTA_NONE};
    CodecUse& u = uses[ModeString(m)];
    u.frames++;
    u.payload += h.payload_length;
    u.plain += h.plain_length;
    frames++;
    prefix_frames += (h.flags & handoff::kFrameFlagPrefix) != 0;
    pos += handoff::kFrameHeaderSize + h.payload_length;
  }
  const char* state = have_end ? "complete" : s.ok() ? "truncated" : "damaged";
  if (args.Has("--json")) {
    Json j;
    std::string regions = "[";
    for (size_t i = 0; i < header.geometry.region_count(); i++) {
      const handoff::Region& r = header.geometry.regions()[i];
      Json rj;
      rj.Add("name", r.name)
          .Add("kind", r.kind == HANDOFF_REGION_DISK ? "disk" : "memory")
          .Add("size", r.size);
      regions += (i ? ", " : "") + rj.str();
    }
    std::string codecs = "{";
    bool first = true;
    for (const auto& [name, u] : uses) {
      Json cj;
      cj.Add("frames", u.frames).Add("payload_bytes", u.payload).Add("plain_bytes", u.plain);
      codecs += (first ? "" : ", ") + JsonString(name) + ": " + cj.str();
      first = false;
    }
    j.Add("state", state)
        .Add("bytes", static_cast<uint64_t>(len))
        .Add("base_id", Hex(header.base_id, 16))
        .AddRaw("regions", regions + "]")
        .Add("frames", frames)
        .Add("prefix_frames", prefix_frames)
        .AddRaw("modes", codecs + "}");
    if (have_end) {
      j.Add("records", end.record_count)
          .Add("zero_records", end.per_type[0])
          .Add("data_records", end.per_type[1])
          .Add("base_ref_records", end.per_type[2])
          .Add("self_ref_records", end.per_type[3])
          .Add("iteration_markers", end.per_type[4])
          .Add("plain_bytes", end.plain_bytes)
          .Add("digest", Hex(end.digest, 16));
    }
    printf("%s\n", j.str().c_str());
    return have_end ? 0 : 1;
  }
  printf("stream    %s, %zu bytes, format v1\n", state, len);
  printf("base id   %s\n", Hex(header.base_id, 16).c_str());
  for (const handoff::Region& r : header.geometry.regions())
    printf("region    %-16s %-6s %llu bytes\n", r.name.c_str(),
           r.kind == HANDOFF_REGION_DISK ? "disk" : "memory",
           (unsigned long long)r.size);
  printf("frames    %llu\n", (unsigned long long)frames);
  for (const auto& [name, u] : uses)
    printf("  %-14s %8llu frames  %12llu -> %12llu bytes (%.3f)\n", name.c_str(),
           (unsigned long long)u.frames, (unsigned long long)u.plain,
           (unsigned long long)u.payload,
           u.plain ? static_cast<double>(u.payload) / u.plain : 0.0);
  if (have_end)
    printf("records   %llu: zero %llu  data %llu  base_ref %llu  self_ref %llu  "
           "iterations %llu\n",
           (unsigned long long)end.record_count, (unsigned long long)end.per_type[0],
           (unsigned long long)end.per_type[1], (unsigned long long)end.per_type[2],
           (unsigned long long)end.per_type[3], (unsigned long long)end.per_type[4]);
  return have_end ? 0 : 1;
}

}  // namespace handoff_cli
