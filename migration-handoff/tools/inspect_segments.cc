// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff inspect on a segmented stream (version 3): the table part
// (segments, dependencies, local records) and each segment as the file
// holds it, checked against the SHA-256 the table lists. No base needed,
// nothing decompressed; every offset is checked against the file first.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"
#include "inspect.h"
#include "segment_table.h"

namespace handoff_cli {
namespace {

using handoff::SegmentTable;

// What the file holds of segment k.
struct SegmentSeen {
  bool present = false;   // all its bytes are in the file
  bool hash_ok = false;   // and they have the table's SHA-256
  uint32_t flags = 0;     // from its header, when present
  uint32_t frames = 0;
};

SegmentSeen LookAt(const SegmentTable& t, uint32_t k, const uint8_t* data,
                   size_t size) {
  SegmentSeen seen;
  const handoff::SegmentEntry& e = t.entries[k];
  const uint64_t at = t.table_len + e.offset;
  if (at > size || e.length > size - at) return seen;
  seen.present = true;
  handoff::Sha256Digest got;
  seen.hash_ok = handoff::Sha256(data + at, e.length, &got).ok() &&
                 got == e.sha256;
  handoff::SegmentHeader h;
  if (handoff::ParseSegmentHeader(data + at, e.length, &h).ok()) {
    seen.flags = h.flags;
    seen.frames = h.frame_count;
  }
  return seen;
}

const char* SeenState(const SegmentSeen& s) {
  return !s.present ? "missing" : s.hash_ok ? "ok" : "sha256-mismatch";
}

const char* FlagsName(uint32_t flags) {
  static const char* const names[] = {"?", "memory", "disk", "memory+disk"};
  return names[flags & 3];
}

std::string DepsText(const SegmentTable& t, uint32_t k, const char* sep) {
  std::string out;
  for (uint32_t i = 0; i < t.entries[k].dep_count; i++)
    out += (i ? sep : "") + std::to_string(t.DepsOf(k)[i]);
  return out;
}

void PrintSegmentsJson(const SegmentTable& t, const std::string& root,
                       const char* state, const uint8_t* data, size_t size,
                       FILE* out) {
  std::string segments = "[";
  for (uint32_t k = 0; k < t.entries.size(); k++) {
    const SegmentSeen seen = LookAt(t, k, data, size);
    Json sj;
    sj.Add("number", static_cast<uint64_t>(k))
        .Add("offset", t.table_len + t.entries[k].offset)
        .Add("length", static_cast<uint64_t>(t.entries[k].length))
        .Add("kinds", FlagsName(seen.flags))
        .Add("frames", static_cast<uint64_t>(seen.frames))
        .AddRaw("dependencies", "[" + DepsText(t, k, ", ") + "]")
        .Add("sha256", Hex(t.entries[k].sha256.data(), handoff::kSha256Size))
        .Add("state", SeenState(seen));
    segments += (k ? ", " : "") + sj.str();
  }
  Json j;
  j.Add("state", state)
      .Add("bytes", static_cast<uint64_t>(size))
      .Add("format", 3)
      .Add("base_id", Hex(t.header.base_id, 16))
      .AddRaw("regions", RegionsJson(t.header))
      .Add("table_bytes", t.table_len)
      .Add("root", root)
      .Add("local_frames", static_cast<uint64_t>(t.local_frames))
      .Add("local_bytes", static_cast<uint64_t>(t.local.size()))
      .Add("dependencies", static_cast<uint64_t>(t.deps.size()))
      .Add("index_extents", static_cast<uint64_t>(t.index.size()))
      .Add("indexed_chunks", t.indexed_chunks)
      .AddRaw("segments", segments + "]");
  fprintf(out, "%s\n", j.str().c_str());
}

void PrintSegmentsText(const SegmentTable& t, const std::string& root,
                       const char* state, const uint8_t* data, size_t size,
                       FILE* out) {
  PrintHeaderText(t.header, state, size, out);
  fprintf(out,
          "table     %llu bytes: %zu segments (%llu bytes), %zu dependencies, "
          "%u local frames (%zu bytes)\n",
          (unsigned long long)t.table_len, t.entries.size(),
          (unsigned long long)t.segment_bytes, t.deps.size(), t.local_frames,
          t.local.size());
  fprintf(out, "index     %zu extents, %llu chunks with a record\n",
          t.index.size(), (unsigned long long)t.indexed_chunks);
  fprintf(out, "root      %s\n", root.c_str());
  for (uint32_t k = 0; k < t.entries.size(); k++) {
    const SegmentSeen seen = LookAt(t, k, data, size);
    fprintf(out,
            "segment   %-6u offset %-10llu %5u bytes  %-11s %3u frames  "
            "sha256 %.16s  %s  deps [%s]\n",
            k, (unsigned long long)(t.table_len + t.entries[k].offset),
            t.entries[k].length, FlagsName(seen.flags), seen.frames,
            Hex(t.entries[k].sha256.data(), handoff::kSha256Size).c_str(),
            SeenState(seen), DepsText(t, k, ",").c_str());
  }
}

}  // namespace

// By the version field alone: what follows is for the segmented report
// to check and name.
bool IsSegmentedStream(const uint8_t* data, size_t size) {
  return size >= 10 &&
         std::memcmp(data, handoff::kStreamMagic, sizeof(handoff::kStreamMagic)) == 0 &&
         data[8] == handoff::kSegmentedStreamVersion && data[9] == 0;
}

int InspectSegmentedStream(const uint8_t* data, size_t size, bool json,
                           FILE* out, FILE* err) {
  uint64_t table_len = 0;
  size_t needed = 0;
  handoff::Status s = handoff::SegmentTableLength(data, size, &table_len, &needed);
  if (s.ok() && table_len > size)
    s = handoff::Status(HANDOFF_E_TRUNCATED,
                        "segment table part truncated (" + std::to_string(size) +
                            " bytes, it needs " + std::to_string(table_len) + ")");
  SegmentTable t;
  if (s.ok()) s = handoff::ParseSegmentTable(data, table_len, &t);
  if (!s.ok()) {
    fprintf(err, "qemu-handoff inspect: %s\n", s.message().c_str());
    return 1;
  }
  handoff::Sha256Digest root;
  if (!handoff::Sha256(data, table_len, &root).ok()) return 1;
  bool complete = size == table_len + t.segment_bytes, truncated = false;
  for (uint32_t k = 0; k < t.entries.size(); k++) {
    const SegmentSeen seen = LookAt(t, k, data, size);
    complete &= seen.hash_ok;
    truncated |= !seen.present;
  }
  const char* state = complete ? "complete" : truncated ? "truncated" : "damaged";
  const std::string root_hex = Hex(root.data(), root.size());
  if (json)
    PrintSegmentsJson(t, root_hex, state, data, size, out);
  else
    PrintSegmentsText(t, root_hex, state, data, size, out);
  if (!complete)
    fprintf(err, "qemu-handoff inspect: segmented stream %s\n", state);
  return complete ? 0 : 1;
}

}  // namespace handoff_cli
