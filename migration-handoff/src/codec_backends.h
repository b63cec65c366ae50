// SPDX-License-Identifier: GPL-2.0-or-later
//
// The functions of each codec library, one file each (codec_zstd.cc,
// codec_lzma.cc, codec_zlib.cc), that codec.cc dispatches to once it has
// checked the codec and level. Decompression follows the contract of
// Decompressor::Decompress: exactly @plain_len bytes, never more.
#ifndef HANDOFF_CODEC_BACKENDS_H
#define HANDOFF_CODEC_BACKENDS_H

#include <cstddef>
#include <cstdint>

#include "codec.h"
#include "status.h"

namespace handoff {

// The two ways a payload can disagree with its declared plaintext length
// (HANDOFF_E_SIZE_MISMATCH), worded alike for every codec.
Status ExpandsBeyond(int codec, size_t plain_len);
Status ShortOutput(int codec, size_t got, size_t plain_len);

ZSTD_CCtx_s* NewZstdCompressContext();
void FreeZstdCompressContext(ZSTD_CCtx_s* ctx);
ZSTD_DCtx_s* NewZstdDecompressContext();
void FreeZstdDecompressContext(ZSTD_DCtx_s* ctx);
Status ZstdCompress(ZSTD_CCtx_s* ctx, int level, const uint8_t* src,
                    size_t len, const uint8_t* prefix, size_t prefix_len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len);
Status ZstdDecompress(ZSTD_DCtx_s* ctx, const uint8_t* src, size_t len,
                      const uint8_t* prefix, size_t prefix_len, uint8_t* dst,
                      size_t plain_len);

Status LzmaCompress(int level, const uint8_t* src, size_t len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len);
Status LzmaDecompress(const uint8_t* src, size_t len, uint8_t* dst,
                      size_t plain_len);

Status ZlibCompress(int level, const uint8_t* src, size_t len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len);
Status ZlibDecompress(const uint8_t* src, size_t len, uint8_t* dst,
                      size_t plain_len);

}  // namespace handoff

#endif  // HANDOFF_CODEC_BACKENDS_H
