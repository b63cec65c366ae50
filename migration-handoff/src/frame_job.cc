// SPDX-License-Identifier: GPL-2.0-or-later
#include "frame_job.h"

#include <cstring>
#include <ctime>

#include "byte_io.h"
#include "format.h"
#include "record.h"

namespace handoff {
namespace {

double ThreadCpuSeconds() {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

size_t ZeroWords(const uint8_t* p) {
  size_t n = 0;
  for (size_t i = 0; i < kChunkSize; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    n += w == 0;
  }
  return n;
}

// Rewrites DATA records in place as XOR deltas where that leaves more zero
// words, a cheap proxy for "compresses smaller" decided per chunk.
uint64_t ApplyXorDelta(const Base& base, std::string* plain) {
  uint8_t* p = reinterpret_cast<uint8_t*>(plain->data());
  const size_t len = plain->size();
  uint64_t converted = 0;
  uint8_t x[kChunkSize];
  for (size_t pos = 0; pos + kRecordHeaderSize <= len;) {
    const RecordType type = static_cast<RecordType>(p[pos]);
    size_t body = type == RecordType::kData      ? kChunkSize
                  : type == RecordType::kBaseRef ? kBaseRefBodySize
                  : type == RecordType::kSelfRef ? kSelfRefBodySize
                                                 : 0;
    if (type == RecordType::kData) {
      uint8_t* data = p + pos + kRecordHeaderSize;
      const uint8_t* same =
          base.Chunk(p[pos + 1], LoadLe<uint64_t>(p + pos + 16));
      for (size_t i = 0; i < kChunkSize; i += 8) {
        uint64_t a, b;
        std::memcpy(&a, data + i, 8);
        std::memcpy(&b, same + i, 8);
        a ^= b;
        std::memcpy(x + i, &a, 8);
      }
      if (ZeroWords(x) > ZeroWords(data)) {
        std::memcpy(data, x, kChunkSize);
        p[pos + 2] |= kRecordFlagXor;
        converted++;
      }
    }
    pos += kRecordHeaderSize + body;
  }
  return converted;
}

}  // namespace

void EncodeFrame(const Base& base, Compressor* compressor, FrameJob* job) {
  double start = ThreadCpuSeconds();
  if (job->mode.delta == HANDOFF_DELTA_XOR)
    job->xor_chunks = ApplyXorDelta(base, &job->plain);
  FrameHeader h;
  h.frame_seq = job->frame_seq;
  h.plain_length = static_cast<uint32_t>(job->plain.size());
  h.plain_checksum = Checksum64(job->plain.data(), job->plain.size());
  h.record_count = job->records;

  std::string prefix;
  bool use_prefix = job->mode.codec == HANDOFF_CODEC_ZSTD &&
                    job->mode.delta == HANDOFF_DELTA_PREFIX &&
                    !job->prefix.empty();
  if (use_prefix) {
    prefix.resize(job->prefix.size() * kChunkSize);
    for (size_t i = 0; i < job->prefix.size(); i++)
      std::memcpy(prefix.data() + i * kChunkSize,
                  base.ChunkGlobal(job->prefix[i]), kChunkSize);
  }
  const uint8_t* compressed = nullptr;
  size_t compressed_len = 0;
  HandoffCodec codec = job->mode.codec;
  int level = job->mode.level;
  const uint8_t* plain = reinterpret_cast<const uint8_t*>(job->plain.data());
  job->status = compressor->Compress(
      codec, level, plain, job->plain.size(),
      reinterpret_cast<const uint8_t*>(prefix.data()), prefix.size(),
      &compressed, &compressed_len);
  if (!job->status.ok()) return;
  size_t list_bytes = use_prefix ? 8 + 8 * job->prefix.size() : 0;
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
  if (use_prefix) {
    ByteWriter w(&job->bytes);
    w.Put<uint32_t>(static_cast<uint32_t>(job->prefix.size()));
    w.Put<uint32_t>(0);
    for (uint64_t g : job->prefix) w.Put<uint64_t>(g);
  }
  job->bytes.append(reinterpret_cast<const char*>(compressed), compressed_len);
  job->cpu_s = ThreadCpuSeconds() - start;
}

}  // namespace handoff
