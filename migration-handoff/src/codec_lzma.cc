// SPDX-License-Identifier: GPL-2.0-or-later
//
// lzma: one .xz stream per payload (LZMA2, check NONE when we write it).
#include <lzma.h>

#include <algorithm>
#include <string>

#include "codec_backends.h"

namespace handoff {
namespace {

// lzma presets size their dictionary for whole files (64 MiB at -9); a
// frame is at most kMaxPlainLength, so a dictionary beyond 8 MiB only
// wastes memory on both sides.
constexpr uint32_t kLzmaMaxDict = 8u << 20;
constexpr uint64_t kLzmaDecodeMemlimit = 64u << 20;

}  // namespace

Status LzmaCompress(int level, const uint8_t* src, size_t len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len) {
  lzma_options_lzma opt;
  if (lzma_lzma_preset(&opt, static_cast<uint32_t>(level)))
    return Status(HANDOFF_E_INTERNAL, "lzma preset rejected");
  uint32_t dict = LZMA_DICT_SIZE_MIN;
  while (dict < len && dict < kLzmaMaxDict) dict *= 2;
  opt.dict_size = std::min(opt.dict_size, dict);
  lzma_filter filters[] = {{LZMA_FILTER_LZMA2, &opt},
                           {LZMA_VLI_UNKNOWN, nullptr}};
  const size_t cap = lzma_stream_buffer_bound(len);
  uint8_t* dst = scratch->Get(cap);
  size_t pos = 0;
  lzma_ret rc = lzma_stream_buffer_encode(filters, LZMA_CHECK_NONE, nullptr,
                                          src, len, dst, &pos, cap);
  if (rc != LZMA_OK)
    return Status(HANDOFF_E_INTERNAL,
                  "lzma_stream_buffer_encode failed: " + std::to_string(rc));
  *out = dst;
  *out_len = pos;
  return Status::Ok();
}

Status LzmaDecompress(const uint8_t* src, size_t len, uint8_t* dst,
                      size_t plain_len) {
  lzma_stream z = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&z, kLzmaDecodeMemlimit, 0) != LZMA_OK)
    return Status(HANDOFF_E_NO_MEMORY, "lzma_stream_decoder failed");
  z.next_in = src;
  z.avail_in = len;
  z.next_out = dst;
  z.avail_out = plain_len;
  lzma_ret rc = lzma_code(&z, LZMA_FINISH);
  const size_t produced = plain_len - z.avail_out;
  if ((rc == LZMA_BUF_ERROR || rc == LZMA_OK) && z.avail_out == 0) {
    // Output full before the stream ended: would it give more?
    uint8_t extra;
    z.next_out = &extra;
    z.avail_out = 1;
    rc = lzma_code(&z, LZMA_FINISH);
    if (z.avail_out == 0) {
      lzma_end(&z);
      return ExpandsBeyond(HANDOFF_CODEC_LZMA, plain_len);
    }
  }
  const size_t left_in = z.avail_in;
  lzma_end(&z);
  if (rc == LZMA_BUF_ERROR)
    return Status(HANDOFF_E_DECOMPRESS, "lzma payload truncated");
  if (rc != LZMA_STREAM_END)
    return Status(HANDOFF_E_DECOMPRESS,
                  "lzma payload rejected (lzma_ret " + std::to_string(rc) + ")");
  if (left_in != 0)
    return Status(HANDOFF_E_DECOMPRESS, "bytes after the lzma stream");
  if (produced != plain_len) return ShortOutput(HANDOFF_CODEC_LZMA, produced, plain_len);
  return Status::Ok();
}

}  // namespace handoff
