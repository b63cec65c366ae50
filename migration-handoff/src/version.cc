// SPDX-License-Identifier: GPL-2.0-or-later
//
// Library identity: the engine's own version and that of the libraries it
// links, read at run time so that a report names what actually runs.

#include "handoff.h"

#include "codec.h"

#include <lzma.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include <string>

namespace handoff {
namespace {

constexpr const char kVersion[] = HANDOFF_VERSION_STRING;

static_assert(HANDOFF_VERSION_NUMBER ==
                  HANDOFF_VERSION_MAJOR_FROM_BUILD * 10000 +
                      HANDOFF_VERSION_MINOR_FROM_BUILD * 100 +
                      HANDOFF_VERSION_RELEASE_FROM_BUILD,
              "handoff.h and the VERSION file disagree");

// XXH_versionNumber() is MAJOR*10000 + MINOR*100 + RELEASE.
std::string DottedVersion(unsigned number) {
  return std::to_string(number / 10000) + "." +
         std::to_string(number / 100 % 100) + "." +
         std::to_string(number % 100);
}

// The run-time version of @codec's library ("" for none).
const char* LibraryVersion(int codec) {
  static const std::string lzma = lzma_version_string();
  switch (codec) {
    case HANDOFF_CODEC_ZSTD: return ZSTD_versionString();
    case HANDOFF_CODEC_LZMA: return lzma.c_str();
    case HANDOFF_CODEC_ZLIB: return zlibVersion();
    default: return "";
  }
}

}  // namespace
}  // namespace handoff

extern "C" {

unsigned handoff_version_number(void) noexcept {
  return HANDOFF_VERSION_NUMBER;
}

const char* handoff_version_string(void) noexcept {
  return handoff::kVersion;
}

size_t handoff_codec_count(void) noexcept {
  return handoff::CodecCount();
}

// The codec table is codec.cc's; this adds the libraries' versions.
int handoff_codec_info(size_t index, HandoffCodecInfo* info) noexcept {
  try {
    const handoff::CodecEntry* c =
        index < handoff::CodecCount() ? handoff::FindCodec(static_cast<int>(index))
                                      : nullptr;
    if (info == nullptr || c == nullptr) return -1;
    *info = {static_cast<HandoffCodec>(index), c->name, c->library,
             handoff::LibraryVersion(static_cast<int>(index)), c->min_level,
             c->max_level};
    return 0;
  } catch (...) {
    return -1;
  }
}

const char* handoff_hash_name(void) noexcept {
  return "xxh3-128";
}

const char* handoff_hash_version(void) noexcept {
  try {
    static const std::string version =
        handoff::DottedVersion(XXH_versionNumber());
    return version.c_str();
  } catch (...) {
    return "unknown";
  }
}

}  // extern "C"
