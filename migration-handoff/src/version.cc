// SPDX-License-Identifier: GPL-2.0-or-later
//
// Library identity: the engine's own version and that of the libraries it
// links, read at run time so that a report names what actually runs.

#include "handoff.h"

#include <lzma.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include <array>
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

const std::array<HandoffCodecInfo, 4>& Codecs() {
  // Built once; the strings live as long as the process.
  static const std::array<HandoffCodecInfo, 4> codecs = [] {
    static const std::string lzma = lzma_version_string();
    return std::array<HandoffCodecInfo, 4>{{
        {HANDOFF_CODEC_NONE, "none", "", "", 0, 0},
        {HANDOFF_CODEC_ZSTD, "zstd", "libzstd", ZSTD_versionString(), 1,
         ZSTD_maxCLevel() < 19 ? ZSTD_maxCLevel() : 19},
        {HANDOFF_CODEC_LZMA, "lzma", "liblzma", lzma.c_str(), 0, 9},
        {HANDOFF_CODEC_ZLIB, "zlib", "zlib", zlibVersion(), 1, 9},
    }};
  }();
  return codecs;
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
  return handoff::Codecs().size();
}

int handoff_codec_info(size_t index, HandoffCodecInfo* info) noexcept {
  try {
    const auto& codecs = handoff::Codecs();
    if (info == nullptr || index >= codecs.size()) return -1;
    *info = codecs[index];
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
