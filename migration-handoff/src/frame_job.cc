// SPDX-License-Identifier: GPL-2.0-or-later
#include "frame_job.h"

#include <cstring>
#include <ctime>

#include "format.h"
#include "prefix_list.h"
#include "xor_delta.h"

namespace handoff {
namespace {

double ThreadCpuSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

}  // namespace

void EncodeFrame(const Base& base, Compressor* compressor, FrameJob* job) {
  double start = ThreadCpuSeconds();
  if (job->mode.delta == HANDOFF_DELTA_XOR) {
    job->status = ApplyXorDelta(base, &job->plain, &job->xor_chunks);
    if (!job->status.ok()) return;
  }
  FrameHeader h;
  h.frame_seq = job->frame_seq;
  h.plain_length = static_cast<uint32_t>(job->plain.size());
  h.plain_checksum = Checksum64(job->plain.data(), job->plain.size());
  h.record_count = job->records;

  std::vector<uint8_t> prefix;
  bool use_prefix = job->mode.codec == HANDOFF_CODEC_ZSTD &&
                    job->mode.delta == HANDOFF_DELTA_PREFIX &&
                    !job->prefix.empty();
  if (use_prefix) GatherPrefix(base, job->prefix, &prefix);
  const uint8_t* compressed = nullptr;
  size_t compressed_len = 0;
  HandoffCodec codec = job->mode.codec;
  int level = job->mode.level;
  const uint8_t* plain = reinterpret_cast<const uint8_t*>(job->plain.data());
  job->status = compressor->Compress(
      codec, level, plain, job->plain.size(), prefix.data(), prefix.size(),
      &compressed, &compressed_len);
  if (!job->status.ok()) return;
  size_t list_bytes = use_prefix ? PrefixListSize(job->prefix.size()) : 0;
  if (compressed_len + list_bytes >= job->plain.size()) {
    // Stored is smaller: never let a frame expand.
    codec = HANDOFF_CODEC_NONE;
    level = 0;
    use_prefix = false;
    list_bytes = 0;
    compressed = plain;
    compressed_len = job->plain.size();
  }
  h.codec = static_cast<uint8_t>(codec);
  h.level = static_cast<int8_t>(level);
  h.flags = use_prefix ? kFrameFlagPrefix : 0;
  h.payload_length = static_cast<uint32_t>(list_bytes + compressed_len);

  job->bytes.reserve(kFrameHeaderSize + h.payload_length);
  job->bytes.resize(kFrameHeaderSize);
  SerializeFrameHeader(h, reinterpret_cast<uint8_t*>(job->bytes.data()));
  if (use_prefix) AppendPrefixList(job->prefix, &job->bytes);
  job->bytes.append(reinterpret_cast<const char*>(compressed), compressed_len);
  job->cpu_s = ThreadCpuSeconds() - start;
}

}  // namespace handoff
