// SPDX-License-Identifier: GPL-2.0-or-later
//
// zlib: one RFC 1950 stream per payload.
#include <zlib.h>

#include <cstring>
#include <string>

#include "codec_backends.h"

namespace handoff {

Status ZlibCompress(int level, const uint8_t* src, size_t len,
                    ScratchBuffer* scratch, const uint8_t** out,
                    size_t* out_len) {
  uLongf n = compressBound(static_cast<uLong>(len));
  uint8_t* dst = scratch->Get(n);
  int rc = compress2(dst, &n, src, static_cast<uLong>(len), level);
  if (rc != Z_OK)
    return Status(HANDOFF_E_INTERNAL,
                  "zlib compress2 failed: " + std::to_string(rc));
  *out = dst;
  *out_len = n;
  return Status::Ok();
}

Status ZlibDecompress(const uint8_t* src, size_t len, uint8_t* dst,
                      size_t plain_len) {
  z_stream z;
  std::memset(&z, 0, sizeof(z));
  if (inflateInit(&z) != Z_OK)
    return Status(HANDOFF_E_NO_MEMORY, "inflateInit failed");
  z.next_in = const_cast<Bytef*>(src);
  z.avail_in = static_cast<uInt>(len);
  z.next_out = dst;
  z.avail_out = static_cast<uInt>(plain_len);
  int rc = inflate(&z, Z_FINISH);
  const size_t produced = plain_len - z.avail_out;
  size_t left_in = z.avail_in;
  if (rc == Z_BUF_ERROR && z.avail_out == 0) {
    // Output full before the stream ended: would it give more?
    uint8_t extra;
    z.next_out = &extra;
    z.avail_out = 1;
    rc = inflate(&z, Z_FINISH);
    const bool more = z.avail_out == 0;
    inflateEnd(&z);
    if (more) return ExpandsBeyond(HANDOFF_CODEC_ZLIB, plain_len);
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
  if (produced != plain_len) return ShortOutput(HANDOFF_CODEC_ZLIB, produced, plain_len);
  return Status::Ok();
}

}  // namespace handoff
