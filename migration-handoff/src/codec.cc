// SPDX-License-Identifier: GPL-2.0-or-later
#include "codec.h"

#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

namespace handoff {
namespace {

// lzma presets size their dictionary for whole files (64 MiB at -9); a
// frame is at most kMaxPlainLength, so a dictionary beyond 8 MiB only
// wastes memory on both sides.
constexpr uint32_t kLzmaMaxDict = 8u << 20;
constexpr uint64_t kLzmaDecodeMemlimit = 64u << 20;

Status ZstdError(const char* what, size_t code) {
  return Status(HANDOFF_E_DECOMPRESS,
                std::string(what) + ": " + ZSTD_getErrorName(code));
}

}  // namespace

bool CodecLevelValid(int codec, int level) {
  switch (codec) {
    case HANDOFF_CODEC_NONE: return level == 0;
    case HANDOFF_CODEC_ZSTD: return level >= 1 && level <= 19;
    case HANDOFF_CODEC_LZMA: return level >= 0 && level <= 9;
    case HANDOFF_CODEC_ZLIB: return level >= 1 && level <= 9;
    default: return false;
  }
}

const char* CodecName(int codec) {
  switch (codec) {
    case HANDOFF_CODEC_NONE: return "none";
    case HANDOFF_CODEC_ZSTD: return "zstd";
    case HANDOFF_CODEC_LZMA: return "lzma";
    case HANDOFF_CODEC_ZLIB: return "zlib";
    default: return "unknown";
  }
}

Compressor::Compressor() : zstd_(ZSTD_createCCtx()) {}
Compressor::~Compressor() { ZSTD_freeCCtx(zstd_); }

uint8_t* Compressor::Scratch(size_t size) {
  if (size > scratch_size_) {
    // Uninitialised on purpose: the codec writes before anything reads.
    scratch_.reset(new uint8_t[size]);
    scratch_size_ = size;
  }
  return scratch_.get();
}

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
    case HANDOFF_CODEC_ZSTD: {
      if (zstd_ == nullptr)
        return Status(HANDOFF_E_NO_MEMORY, "ZSTD_createCCtx failed");
      ZSTD_CCtx_reset(zstd_, ZSTD_reset_session_and_parameters);
      ZSTD_CCtx_setParameter(zstd_, ZSTD_c_compressionLevel, level);
      if (prefix_len != 0) {
        // The window must reach back over the whole prefix.
        int wlog = 10;
        while ((size_t{1} << wlog) < prefix_len + len && wlog < 24) wlog++;
        ZSTD_CCtx_setParameter(zstd_, ZSTD_c_windowLog, wlog);
        size_t rc = ZSTD_CCtx_refPrefix(zstd_, prefix, prefix_len);
        if (ZSTD_isError(rc)) return ZstdError("ZSTD_CCtx_refPrefix", rc);
      }
      size_t cap = ZSTD_compressBound(len);
      uint8_t* dst = Scratch(cap);
      size_t n = ZSTD_compress2(zstd_, dst, cap, src, len);
      if (ZSTD_isError(n)) return ZstdError("ZSTD_compress2", n);
      *out = dst;
      *out_len = n;
      return Status::Ok();
    }
    case HANDOFF_CODEC_LZMA: {
      lzma_options_lzma opt;
      if (lzma_lzma_preset(&opt, static_cast<uint32_t>(level)))
        return Status(HANDOFF_E_INTERNAL, "lzma preset rejected");
      uint32_t dict = LZMA_DICT_SIZE_MIN;
      while (dict < len && dict < kLzmaMaxDict) dict *= 2;
      opt.dict_size = std::min(opt.dict_size, dict);
      lzma_filter filters[] = {{LZMA_FILTER_LZMA2, &opt},
                               {LZMA_VLI_UNKNOWN, nullptr}};
      size_t cap = lzma_stream_buffer_bound(len);
      uint8_t* dst = Scratch(cap);
      size_t pos = 0;
      lzma_ret rc = lzma_stream_buffer_encode(filters, LZMA_CHECK_NONE, nullptr,
                                              src, len, dst, &pos, cap);
      if (rc != LZMA_OK)
        return Status(HANDOFF_E_INTERNAL,
                      "lzma_stream_buffer_encode failed: " +
                          std::to_string(rc));
      *out = dst;
      *out_len = pos;
      return Status::Ok();
    }
    case HANDOFF_CODEC_ZLIB: {
      uLongf n = compressBound(static_cast<uLong>(len));
      uint8_t* dst = Scratch(n);
      int rc = compress2(dst, &n, src, static_cast<uLong>(len), level);
      if (rc != Z_OK)
        return Status(HANDOFF_E_INTERNAL,
                      "zlib compress2 failed: " + std::to_string(rc));
      *out = dst;
      *out_len = n;
      return Status::Ok();
    }
  }
  return Status(HANDOFF_E_INVALID_ARGUMENT, "unknown codec");
}

Decompressor::Decompressor() : zstd_(ZSTD_createDCtx()) {
  // Frames and prefixes are bounded by kMaxPlainLength; refuse frames that
  // ask for larger windows rather than allocating for them.
  if (zstd_ != nullptr) ZSTD_DCtx_setParameter(zstd_, ZSTD_d_windowLogMax, 25);
}
Decompressor::~Decompressor() { ZSTD_freeDCtx(zstd_); }

Status Decompressor::Decompress(int codec, const uint8_t* src, size_t len,
                                const uint8_t* prefix, size_t prefix_len,
                                uint8_t* dst, size_t plain_len) {
  auto too_big = [&] {
    return Status(HANDOFF_E_SIZE_MISMATCH,
                  std::string(CodecName(codec)) +
                      " payload expands beyond the declared " +
                      std::to_string(plain_len) + " bytes");
  };
  auto too_small = [&](size_t got) {
    return Status(HANDOFF_E_SIZE_MISMATCH,
                  std::string(CodecName(codec)) + " payload gives " +
                      std::to_string(got) + " bytes, declared " +
                      std::to_string(plain_len));
  };
  switch (codec) {
    case HANDOFF_CODEC_NONE:
      if (len != plain_len)
        return len > plain_len ? too_big() : too_small(len);
      if (len) std::memcpy(dst, src, len);
      return Status::Ok();
    case HANDOFF_CODEC_ZSTD: {
      if (zstd_ == nullptr)
        return Status(HANDOFF_E_NO_MEMORY, "ZSTD_createDCtx failed");
      ZSTD_DCtx_reset(zstd_, ZSTD_reset_session_only);
      size_t rc = ZSTD_DCtx_refPrefix(zstd_, prefix, prefix_len);
      if (ZSTD_isError(rc)) return ZstdError("ZSTD_DCtx_refPrefix", rc);
      ZSTD_inBuffer in = {src, len, 0};
      ZSTD_outBuffer out = {dst, plain_len, 0};
      for (;;) {
        size_t in_before = in.pos, out_before = out.pos;
        rc = ZSTD_decompressStream(zstd_, &out, &in);
        if (ZSTD_isError(rc)) return ZstdError("zstd payload", rc);
        if (rc == 0) break;  // frame complete
        if (out.pos == out.size) {
          // Output full but the frame wants more: probe for one byte more.
          uint8_t extra;
          ZSTD_outBuffer probe = {&extra, 1, 0};
          rc = ZSTD_decompressStream(zstd_, &probe, &in);
          if (ZSTD_isError(rc)) return ZstdError("zstd payload", rc);
          if (probe.pos != 0) return too_big();
          if (rc == 0) break;
          if (in.pos == in.size) return too_small(out.pos);
          continue;
        }
        if (in.pos == in.size)
          return Status(HANDOFF_E_DECOMPRESS, "zstd payload truncated");
        if (in.pos == in_before && out.pos == out_before)
          return Status(HANDOFF_E_DECOMPRESS, "zstd payload makes no progress");
      }
      if (in.pos != in.size)
        return Status(HANDOFF_E_DECOMPRESS,
                      "bytes after the zstd frame in the payload");
      if (out.pos != plain_len) return too_small(out.pos);
      return Status::Ok();
    }
    case HANDOFF_CODEC_LZMA: {
      if (prefix_len != 0)
        return Status(HANDOFF_E_DECOMPRESS, "lzma frame cannot use a prefix");
      lzma_stream z = LZMA_STREAM_INIT;
      if (lzma_stream_decoder(&z, kLzmaDecodeMemlimit, 0) != LZMA_OK)
        return Status(HANDOFF_E_NO_MEMORY, "lzma_stream_decoder failed");
      z.next_in = src;
      z.avail_in = len;
      z.next_out = dst;
      z.avail_out = plain_len;
      lzma_ret rc = lzma_code(&z, LZMA_FINISH);
      size_t produced = plain_len - z.avail_out;
      if (rc == LZMA_BUF_ERROR || (rc == LZMA_OK && z.avail_out == 0)) {
        if (z.avail_out == 0) {
          // Output full before the stream ended: would it give more?
          uint8_t extra;
          z.next_out = &extra;
          z.avail_out = 1;
          rc = lzma_code(&z, LZMA_FINISH);
          bool more = z.avail_out == 0;
          if (more) {
            lzma_end(&z);
            return too_big();
          }
        }
      }
      size_t left_in = z.avail_in;
      lzma_end(&z);
      if (rc == LZMA_BUF_ERROR)
        return Status(HANDOFF_E_DECOMPRESS, "lzma payload truncated");
      if (rc != LZMA_STREAM_END)
        return Status(HANDOFF_E_DECOMPRESS,
                      "lzma payload rejected (lzma_ret " + std::to_string(rc) +
                          ")");
      if (left_in != 0)
        return Status(HANDOFF_E_DECOMPRESS, "bytes after the lzma stream");
      if (produced != plain_len) return too_small(produced);
      return Status::Ok();
    }
    case HANDOFF_CODEC_ZLIB: {
      if (prefix_len != 0)
        return Status(HANDOFF_E_DECOMPRESS, "zlib frame cannot use a prefix");
      z_stream z;
      std::memset(&z, 0, sizeof(z));
      if (inflateInit(&z) != Z_OK)
        return Status(HANDOFF_E_NO_MEMORY, "inflateInit failed");
      z.next_in = const_cast<Bytef*>(src);
      z.avail_in = static_cast<uInt>(len);
      z.next_out = dst;
      z.avail_out = static_cast<uInt>(plain_len);
      int rc = inflate(&z, Z_FINISH);
      size_t produced = plain_len - z.avail_out;
      size_t left_in = z.avail_in;
      if (rc == Z_BUF_ERROR && z.avail_out == 0) {
        uint8_t extra;
        z.next_out = &extra;
        z.avail_out = 1;
        rc = inflate(&z, Z_FINISH);
        bool more = z.avail_out == 0;
        inflateEnd(&z);
        if (more) return too_big();
        if (rc != Z_STREAM_END)
          return Status(HANDOFF_E_DECOMPRESS, "zlib payload truncated");
        left_in = z.avail_in;
      } else {
        inflateEnd(&z);
        if (rc == Z_BUF_ERROR)
          return Status(HANDOFF_E_DECOMPRESS, "zlib payload truncated");
        if (rc != Z_STREAM_END)
          return Status(HANDOFF_E_DECOMPRESS,
                        "zlib payload rejected (" + std::to_string(rc) + ")");
      }
      if (left_in != 0)
        return Status(HANDOFF_E_DECOMPRESS, "bytes after the zlib stream");
      if (produced != plain_len) return too_small(produced);
      return Status::Ok();
    }
    default:
      return Status(HANDOFF_E_UNKNOWN_CODEC,
                    "unknown codec " + std::to_string(codec));
  }
}

}  // namespace handoff
