// SPDX-License-Identifier: GPL-2.0-or-later
#include "mode.h"

#include <cstdlib>

#include "codec.h"

namespace handoff {
namespace {

constexpr const char* kDeltaSuffix[] = {"", "+xor", "+prefix"};
static_assert(HANDOFF_DELTA_NONE == 0 && HANDOFF_DELTA_XOR == 1 &&
              HANDOFF_DELTA_PREFIX == 2);

Status Invalid(const std::string& why) {
  return Status(HANDOFF_E_INVALID_ARGUMENT, why);
}

// The codec table's names as a sentence: "none, zstd, lzma or zlib".
std::string CodecNames() {
  std::string names;
  for (size_t i = 0; i < CodecCount(); i++) {
    if (i != 0) names += i + 1 == CodecCount() ? " or " : ", ";
    names += FindCodec(static_cast<int>(i))->name;
  }
  return names;
}

// The codec named @name, or -1.
int FindCodecByName(const std::string& name) {
  for (size_t i = 0; i < CodecCount(); i++)
    if (name == FindCodec(static_cast<int>(i))->name) return static_cast<int>(i);
  return -1;
}

}  // namespace

std::string ModeName(const HandoffMode& m) {
  std::string s = CodecName(m.codec);
  if (m.codec != HANDOFF_CODEC_NONE) s += "-" + std::to_string(m.level);
  if (m.delta > HANDOFF_DELTA_NONE && m.delta <= HANDOFF_DELTA_PREFIX)
    s += kDeltaSuffix[m.delta];
  return s;
}

Status ParseMode(const std::string& text, HandoffMode* mode) {
  std::string rest = text;
  HandoffMode m = {HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE};
  size_t plus = rest.find('+');
  if (plus != std::string::npos) {
    std::string delta = rest.substr(plus);
    rest.resize(plus);
    if (delta == kDeltaSuffix[HANDOFF_DELTA_XOR]) {
      m.delta = HANDOFF_DELTA_XOR;
    } else if (delta == kDeltaSuffix[HANDOFF_DELTA_PREFIX]) {
      m.delta = HANDOFF_DELTA_PREFIX;
    } else {
      return Invalid("mode '" + text + "': delta '" + delta.substr(1) +
                     "' is not xor or prefix");
    }
  }
  size_t dash = rest.find('-');
  std::string codec = rest.substr(0, dash);
  const int found = FindCodecByName(codec);
  if (found < 0)
    return Invalid("mode '" + text + "': codec '" + codec + "' is not " +
                   CodecNames());
  const CodecEntry& info = *FindCodec(found);
  m.codec = static_cast<HandoffCodec>(found);
  if (m.codec == HANDOFF_CODEC_NONE) {
    if (dash != std::string::npos)
      return Invalid("mode '" + text + "': none takes no level");
    *mode = m;
    return Status::Ok();
  }
  const char* digits = dash == std::string::npos ? "" : rest.c_str() + dash + 1;
  char* end = nullptr;
  long level = std::strtol(digits, &end, 10);
  if (!*digits || *end || !CodecLevelValid(m.codec, static_cast<int>(level)))
    return Invalid("mode '" + text + "': " + info.name + " levels are " +
                   std::to_string(info.min_level) + ".." +
                   std::to_string(info.max_level));
  m.level = static_cast<int>(level);
  if (m.delta == HANDOFF_DELTA_PREFIX && m.codec != HANDOFF_CODEC_ZSTD)
    return Invalid("mode '" + text + "': +prefix needs zstd");
  *mode = m;
  return Status::Ok();
}

}  // namespace handoff
