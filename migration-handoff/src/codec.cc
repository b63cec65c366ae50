// SPDX-License-Identifier: GPL-2.0-or-later
//
// The codec registry (numbers, names, levels) and dispatch to the codec
// libraries' files.
#include "codec.h"

#include <cstring>
#include <iterator>
#include <string>

#include "codec_backends.h"

namespace handoff {
namespace {

// Indexed by HandoffCodec, the number frames carry. zstd stops at 19: its
// levels 20-22 ("ultra") need windows far larger than a frame.
constexpr CodecEntry kCodecs[] = {
    {"none", "", 0, 0},          // HANDOFF_CODEC_NONE: stored
    {"zstd", "libzstd", 1, 19},  // HANDOFF_CODEC_ZSTD
    {"lzma", "liblzma", 0, 9},   // HANDOFF_CODEC_LZMA
    {"zlib", "zlib", 1, 9},      // HANDOFF_CODEC_ZLIB
};
static_assert(HANDOFF_CODEC_NONE == 0 && HANDOFF_CODEC_ZSTD == 1 &&
              HANDOFF_CODEC_LZMA == 2 && HANDOFF_CODEC_ZLIB == 3);

}  // namespace

size_t CodecCount() { return std::size(kCodecs); }

const CodecEntry* FindCodec(int codec) {
  if (codec < 0 || codec >= static_cast<int>(std::size(kCodecs))) return nullptr;
  return &kCodecs[codec];
}

bool CodecLevelValid(int codec, int level) {
  const CodecEntry* c = FindCodec(codec);
  return c != nullptr && level >= c->min_level && level <= c->max_level;
}

const char* CodecName(int codec) {
  const CodecEntry* c = FindCodec(codec);
  return c != nullptr ? c->name : "unknown";
}

Status ExpandsBeyond(int codec, size_t plain_len) {
  return Status(HANDOFF_E_SIZE_MISMATCH,
                std::string(CodecName(codec)) +
                    " payload expands beyond the declared " +
                    std::to_string(plain_len) + " bytes");
}

Status ShortOutput(int codec, size_t got, size_t plain_len) {
  return Status(HANDOFF_E_SIZE_MISMATCH,
                std::string(CodecName(codec)) + " payload gives " +
                    std::to_string(got) + " bytes, declared " +
                    std::to_string(plain_len));
}

uint8_t* ScratchBuffer::Get(size_t size) {
  if (size > size_) {
    // Uninitialised on purpose: the codec writes before anything reads.
    buf_.reset(new uint8_t[size]);
    size_ = size;
  }
  return buf_.get();
}

Compressor::Compressor() : zstd_(NewZstdCompressContext()) {}
Compressor::~Compressor() { FreeZstdCompressContext(zstd_); }

Status Compressor::Compress(HandoffCodec codec, int level, const uint8_t* src,
                            size_t len, const uint8_t* prefix,
                            size_t prefix_len, const uint8_t** out,
                            size_t* out_len) {
  if (!CodecLevelValid(codec, level))
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  std::string("level ") + std::to_string(level) +
                      " not valid for " + CodecName(codec));
  if (prefix_len != 0 && codec != HANDOFF_CODEC_ZSTD)
    return Status(HANDOFF_E_INVALID_ARGUMENT, "prefix needs zstd");
  switch (codec) {
    case HANDOFF_CODEC_NONE:
      *out = src;
      *out_len = len;
      return Status::Ok();
    case HANDOFF_CODEC_ZSTD:
      return ZstdCompress(zstd_, level, src, len, prefix, prefix_len,
                          &scratch_, out, out_len);
    case HANDOFF_CODEC_LZMA:
      return LzmaCompress(level, src, len, &scratch_, out, out_len);
    case HANDOFF_CODEC_ZLIB:
      return ZlibCompress(level, src, len, &scratch_, out, out_len);
  }
  return Status(HANDOFF_E_INVALID_ARGUMENT, "unknown codec");
}

Decompressor::Decompressor() : zstd_(NewZstdDecompressContext()) {}
Decompressor::~Decompressor() { FreeZstdDecompressContext(zstd_); }

Status Decompressor::Decompress(int codec, const uint8_t* src, size_t len,
                                const uint8_t* prefix, size_t prefix_len,
                                uint8_t* dst, size_t plain_len) {
  switch (codec) {
    case HANDOFF_CODEC_NONE:
      if (len != plain_len)
        return len > plain_len ? ExpandsBeyond(codec, plain_len)
                               : ShortOutput(codec, len, plain_len);
      if (len) std::memcpy(dst, src, len);
      return Status::Ok();
    case HANDOFF_CODEC_ZSTD:
      return ZstdDecompress(zstd_, src, len, prefix, prefix_len, dst, plain_len);
    case HANDOFF_CODEC_LZMA:
      if (prefix_len != 0)
        return Status(HANDOFF_E_DECOMPRESS, "lzma frame cannot use a prefix");
      return LzmaDecompress(src, len, dst, plain_len);
    case HANDOFF_CODEC_ZLIB:
      if (prefix_len != 0)
        return Status(HANDOFF_E_DECOMPRESS, "zlib frame cannot use a prefix");
      return ZlibDecompress(src, len, dst, plain_len);
    default:
      return Status(HANDOFF_E_UNKNOWN_CODEC,
                    "unknown codec " + std::to_string(codec));
  }
}

}  // namespace handoff
