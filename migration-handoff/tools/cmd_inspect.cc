// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff inspect: summary of a stream from its headers and end
// record alone — no base needed, nothing decompressed.
#include "inspect.h"

#include <cstdio>
#include <map>
#include <string>

#include "cli.h"
#include "format.h"
#include "record_kind.h"
#include "stream_walker.h"

namespace handoff_cli {
namespace {

using handoff::RecordKind;

struct CodecUse {
  uint64_t frames = 0, payload = 0, plain = 0;
};

// What the walk over a stream found, as far as it got.
struct Summary {
  size_t bytes = 0;
  handoff::StreamHeader header;
  std::map<std::string, CodecUse> uses;  // by mode
  uint64_t frames = 0, prefix_frames = 0;
  handoff::EndRecord end;
  bool have_end = false, truncated = false;
  std::string problem;  // why the stream is not complete

  bool complete() const { return have_end && problem.empty(); }
  const char* state() const {
    return complete() ? "complete" : truncated ? "truncated" : "damaged";
  }
};

// The mode a frame header names. Its codec byte is the stream's word,
// checked only when a frame is decoded: a byte that names no codec is
// shown as such, never made a HandoffCodec (the enum cannot hold it).
std::string FrameModeName(const handoff::FrameHeader& h, bool prefix) {
  if (h.codec >= handoff_codec_count())
    return "unknown-codec-" + std::to_string(h.codec);
  const HandoffMode m = {static_cast<HandoffCodec>(h.codec), h.level,
                         prefix ? HANDOFF_DELTA_PREFIX : HANDOFF_DELTA_NONE};
  return ModeString(m);
}

// Walks the frames after the header, up to the end record or the first
// part that cannot be read.
void WalkFrames(const uint8_t* data, handoff::StreamWalker* walker,
                Summary* sum) {
  for (handoff::StreamPart part;;) {
    handoff::Status s = walker->Next(&part);
    if (!s.ok()) {
      sum->truncated = s.code() == HANDOFF_E_TRUNCATED;
      sum->problem = s.message();
      break;
    }
    if (part.is_end) {
      s = handoff::ParseEndRecord(data + part.offset, &sum->end);
      sum->have_end = s.ok();
      const size_t after = sum->bytes - part.offset - part.size;
      if (!s.ok())
        sum->problem = "end record at byte " + std::to_string(part.offset) +
                       ": " + s.message();
      else if (after > 0)
        sum->problem = std::to_string(after) + " bytes after the end record";
      break;
    }
    const handoff::FrameHeader& h = part.frame;
    const bool prefix = (h.flags & handoff::kFrameFlagPrefix) != 0;
    CodecUse& u = sum->uses[FrameModeName(h, prefix)];
    u.frames++;
    u.payload += h.payload_length;
    u.plain += h.plain_length;
    sum->prefix_frames += prefix;
  }
  sum->frames = walker->frames();
}

void PrintJson(const Summary& sum, FILE* out) {
  Json j;
  std::string codecs = "{";
  bool first = true;
  for (const auto& [name, u] : sum.uses) {
    Json cj;
    cj.Add("frames", u.frames).Add("payload_bytes", u.payload).Add("plain_bytes", u.plain);
    codecs += (first ? "" : ", ") + JsonString(name) + ": " + cj.str();
    first = false;
  }
  j.Add("state", sum.state())
      .Add("bytes", static_cast<uint64_t>(sum.bytes))
      .Add("base_id", Hex(sum.header.base_id, 16))
      .AddRaw("regions", RegionsJson(sum.header))
      .Add("frames", sum.frames)
      .Add("prefix_frames", sum.prefix_frames)
      .AddRaw("modes", codecs + "}");
  if (!sum.problem.empty()) j.Add("error", sum.problem);
  if (sum.have_end) {
    const handoff::EndRecord& e = sum.end;
    j.Add("records", e.record_count)
        .Add("zero_records", e.per_kind[RecordKind::kZero])
        .Add("data_records", e.per_kind[RecordKind::kData])
        .Add("base_ref_records", e.per_kind[RecordKind::kBaseRef])
        .Add("self_ref_records", e.per_kind[RecordKind::kSelfRef])
        .Add("iteration_markers", e.per_kind[RecordKind::kIteration])
        .Add("plain_bytes", e.plain_bytes)
        .Add("digest", Hex(e.digest, 16));
  }
  fprintf(out, "%s\n", j.str().c_str());
}

void PrintText(const Summary& sum, FILE* out) {
  PrintHeaderText(sum.header, sum.state(), sum.bytes, out);
  fprintf(out, "frames    %llu\n", (unsigned long long)sum.frames);
  for (const auto& [name, u] : sum.uses)
    fprintf(out, "  %-14s %8llu frames  %12llu -> %12llu bytes (%.3f)\n",
            name.c_str(), (unsigned long long)u.frames,
            (unsigned long long)u.plain, (unsigned long long)u.payload,
            u.plain ? static_cast<double>(u.payload) / u.plain : 0.0);
  if (!sum.have_end) return;
  const handoff::EndRecord& e = sum.end;
  fprintf(out,
          "records   %llu: zero %llu  data %llu  base_ref %llu  self_ref %llu  "
          "iterations %llu\n",
          (unsigned long long)e.record_count,
          (unsigned long long)e.per_kind[RecordKind::kZero],
          (unsigned long long)e.per_kind[RecordKind::kData],
          (unsigned long long)e.per_kind[RecordKind::kBaseRef],
          (unsigned long long)e.per_kind[RecordKind::kSelfRef],
          (unsigned long long)e.per_kind[RecordKind::kIteration]);
}

}  // namespace

std::string RegionsJson(const handoff::StreamHeader& header) {
  std::string regions = "[";
  for (size_t i = 0; i < header.geometry.region_count(); i++) {
    const handoff::Region& r = header.geometry.regions()[i];
    Json rj;
    rj.Add("name", r.name)
        .Add("kind", r.kind == HANDOFF_REGION_DISK ? "disk" : "memory")
        .Add("size", r.size);
    regions += (i ? ", " : "") + rj.str();
  }
  return regions + "]";
}

void PrintHeaderText(const handoff::StreamHeader& header, const char* state,
                     size_t bytes, FILE* out) {
  fprintf(out, "stream    %s, %zu bytes, format v%u%s\n", state, bytes,
          header.version,
          header.version == handoff::kSegmentedStreamVersion ? " (segmented)"
                                                             : "");
  fprintf(out, "base id   %s\n", Hex(header.base_id, 16).c_str());
  for (const handoff::Region& r : header.geometry.regions())
    fprintf(out, "region    %-16s %-6s %llu bytes\n", r.name.c_str(),
            r.kind == HANDOFF_REGION_DISK ? "disk" : "memory",
            (unsigned long long)r.size);
}

int InspectStream(const uint8_t* data, size_t size, bool json, FILE* out,
                  FILE* err) {
  Summary sum;
  sum.bytes = size;
  handoff::StreamWalker walker(data, size);
  size_t needed = 0;
  if (IsSegmentedStream(data, size))
    return InspectSegmentedStream(data, size, json, out, err);
  handoff::Status s = walker.ReadHeader(&sum.header, &needed);
  if (s.code() == HANDOFF_E_TRUNCATED) {
    fprintf(err,
            "qemu-handoff inspect: stream truncated inside its header "
            "(%zu bytes, the header needs %zu)\n",
            sum.bytes, needed);
    return 1;
  }
  if (!s.ok()) {
    fprintf(err, "qemu-handoff inspect: %s\n", s.message().c_str());
    return 1;
  }
  // Every length is checked against what is left before it is used: the
  // file may end anywhere.
  WalkFrames(data, &walker, &sum);
  if (!sum.problem.empty())
    fprintf(err, "qemu-handoff inspect: %s\n", sum.problem.c_str());
  if (json)
    PrintJson(sum, out);
  else
    PrintText(sum, out);
  return sum.complete() ? 0 : 1;
}

int CmdInspect(const Args& args) {
  if (args.positional().size() != 1) return Usage("inspect");
  Image img;
  std::string err;
  if (!img.OpenRead(args.positional()[0], &err)) {
    fprintf(stderr, "qemu-handoff inspect: %s\n", err.c_str());
    return 1;
  }
  return InspectStream(img.data(), img.size(), args.Has("--json"), stdout,
                       stderr);
}

}  // namespace handoff_cli
