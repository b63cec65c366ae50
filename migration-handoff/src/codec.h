// SPDX-License-Identifier: GPL-2.0-or-later
//
// Codecs: one-shot compression of a frame's plaintext and bounded
// decompression of a payload. Contexts are reused across frames because
// creating a zstd or lzma context costs more than compressing 256 KiB.
#ifndef HANDOFF_CODEC_H
#define HANDOFF_CODEC_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "handoff.h"
#include "status.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace handoff {

// The codec table, the only one: a codec's name, its library and the
// levels the engine accepts (handoff_codec_info reports it with the
// library's run-time version).
struct CodecEntry {
  const char* name;
  const char* library;  // "" for none
  int min_level, max_level;
};
size_t CodecCount();
// The entry of codec number @codec (HandoffCodec), or nullptr.
const CodecEntry* FindCodec(int codec);

// True when @level is accepted for @codec (see handoff_codec_info).
bool CodecLevelValid(int codec, int level);
const char* CodecName(int codec);

// Output buffer reused across frames, so that no frame pays for
// allocating or zeroing one.
class ScratchBuffer {
 public:
  uint8_t* Get(size_t size);

 private:
  std::unique_ptr<uint8_t[]> buf_;
  size_t size_ = 0;
};

class Compressor {
 public:
  Compressor();
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Compresses @src; *out points to the result, valid until the next call
  // (a buffer reused across frames, so no per-frame allocation or zeroing).
  // @prefix (zstd only) is content the decoder will also hold; matches into
  // it cost almost nothing.
  Status Compress(HandoffCodec codec, int level, const uint8_t* src,
                  size_t len, const uint8_t* prefix, size_t prefix_len,
                  const uint8_t** out, size_t* out_len);

 private:
  ZSTD_CCtx_s* zstd_ = nullptr;
  ScratchBuffer scratch_;
};

class Decompressor {
 public:
  Decompressor();
  ~Decompressor();
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;

  // Decompresses exactly @plain_len bytes into @dst. Any payload that would
  // expand beyond @plain_len, or stop short of it, is an error: the
  // declared length bounds all work and memory (no decompression bombs).
  Status Decompress(int codec, const uint8_t* src, size_t len,
                    const uint8_t* prefix, size_t prefix_len, uint8_t* dst,
                    size_t plain_len);

 private:
  ZSTD_DCtx_s* zstd_ = nullptr;
};

}  // namespace handoff

#endif  // HANDOFF_CODEC_H
