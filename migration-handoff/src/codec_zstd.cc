// SPDX-License-Identifier: GPL-2.0-or-later
//
// zstd: one frame per payload, optionally against a raw-content prefix
// the decoder also holds ("patch-from").
#include <zstd.h>

#include <string>

#include "codec_backends.h"

namespace handoff {
namespace {

// Frames and prefixes are bounded by kMaxPlainLength; frames that ask for
// larger windows are refused rather than allocated for.
constexpr int kMaxWindowLog = 25;
// With a prefix the window must reach back over all of it.
constexpr int kMinPrefixWindowLog = 10;
constexpr int kMaxPrefixWindowLog = 24;

Status ZstdError(const char* what, size_t code) {
  return Status(HANDOFF_E_DECOMPRESS,
                std::string(what) + ": " + ZSTD_getErrorName(code));
}

}  // namespace

ZSTD_CCtx_s* NewZstdCompressContext() { return ZSTD_createCCtx(); }
void FreeZstdCompressContext(ZSTD_CCtx_s* ctx) { ZSTD_freeCCtx(ctx); }

ZSTD_DCtx_s* NewZstdDecompressContext() {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (ctx != nullptr) ZSTD_DCtx_setParameter(ctx, ZSTD_d_windowLogMax, kMaxWindowLog);
  return ctx;
}
void FreeZstdDecompressContext(ZSTD_DCtx_s* ctx) { ZSTD_freeDCtx(ctx); }

Status ZstdCompress(ZSTD_CCtx_s* ctx, int level, const uint8_t* src,
                    size_t len, const uint8_t* prefix, size_t prefix_len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len) {
  if (ctx == nullptr) return Status(HANDOFF_E_NO_MEMORY, "ZSTD_createCCtx failed");
  ZSTD_CCtx_reset(ctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(ctx, ZSTD_c_compressionLevel, level);
  if (prefix_len != 0) {
    int wlog = kMinPrefixWindowLog;
    while ((size_t{1} << wlog) < prefix_len + len && wlog < kMaxPrefixWindowLog)
      wlog++;
    ZSTD_CCtx_setParameter(ctx, ZSTD_c_windowLog, wlog);
    size_t rc = ZSTD_CCtx_refPrefix(ctx, prefix, prefix_len);
    if (ZSTD_isError(rc)) return ZstdError("ZSTD_CCtx_refPrefix", rc);
  }
  const size_t cap = ZSTD_compressBound(len);
  uint8_t* dst = scratch->Get(cap);
  const size_t n = ZSTD_compress2(ctx, dst, cap, src, len);
  if (ZSTD_isError(n)) return ZstdError("ZSTD_compress2", n);
  *out = dst;
  *out_len = n;
  return Status::Ok();
}

Status ZstdDecompress(ZSTD_DCtx_s* ctx, const uint8_t* src, size_t len,
                      const uint8_t* prefix, size_t prefix_len, uint8_t* dst,
                      size_t plain_len) {
  if (ctx == nullptr) return Status(HANDOFF_E_NO_MEMORY, "ZSTD_createDCtx failed");
  ZSTD_DCtx_reset(ctx, ZSTD_reset_session_only);
  size_t rc = ZSTD_DCtx_refPrefix(ctx, prefix, prefix_len);
  if (ZSTD_isError(rc)) return ZstdError("ZSTD_DCtx_refPrefix", rc);
  ZSTD_inBuffer in = {src, len, 0};
  ZSTD_outBuffer out = {dst, plain_len, 0};
  for (;;) {
    const size_t in_before = in.pos, out_before = out.pos;
    rc = ZSTD_decompressStream(ctx, &out, &in);
    if (ZSTD_isError(rc)) return ZstdError("zstd payload", rc);
    if (rc == 0) break;  // frame complete
    if (out.pos == out.size) {
      // Output full but the frame wants more: probe for one byte more.
      uint8_t extra;
      ZSTD_outBuffer probe = {&extra, 1, 0};
      rc = ZSTD_decompressStream(ctx, &probe, &in);
      if (ZSTD_isError(rc)) return ZstdError("zstd payload", rc);
      if (probe.pos != 0) return ExpandsBeyond(HANDOFF_CODEC_ZSTD, plain_len);
      if (rc == 0) break;
      if (in.pos == in.size) return ShortOutput(HANDOFF_CODEC_ZSTD, out.pos, plain_len);
      continue;
    }
    if (in.pos == in.size)
      return Status(HANDOFF_E_DECOMPRESS, "zstd payload truncated");
    if (in.pos == in_before && out.pos == out_before)
      return Status(HANDOFF_E_DECOMPRESS, "zstd payload makes no progress");
  }
  if (in.pos != in.size)
    return Status(HANDOFF_E_DECOMPRESS, "bytes after the zstd frame in the payload");
  if (out.pos != plain_len) return ShortOutput(HANDOFF_CODEC_ZSTD, out.pos, plain_len);
  return Status::Ok();
}

}  // namespace handoff
