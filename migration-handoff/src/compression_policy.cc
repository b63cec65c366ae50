// SPDX-License-Identifier: GPL-2.0-or-later
#include "compression_policy.h"

#include <cstring>
#include <string>

#include "codec.h"
#include "mode.h"

namespace handoff {
namespace {

// The word that asks for adaptive compression.
constexpr char kAuto[] = "auto";

// Where adaptive compression starts: the cheapest mode that compresses;
// the controller moves on once it has measured the others.
constexpr HandoffMode kAdaptiveStart = {HANDOFF_CODEC_ZSTD, 1,
                                        HANDOFF_DELTA_NONE};

Status Invalid(const std::string& why) {
  return Status(HANDOFF_E_INVALID_ARGUMENT, why);
}

// The XOR rule: with deltas on, a mode naming no delta runs with XOR
// against the same-offset base chunk (the encoder keeps a chunk raw when
// XOR leaves fewer zero words). A stored mode stays stored.
HandoffMode WithDefaultDelta(HandoffMode mode, int deltas) {
  if (deltas == HANDOFF_DELTAS_ON && mode.delta == HANDOFF_DELTA_NONE &&
      mode.codec != HANDOFF_CODEC_NONE)
    mode.delta = HANDOFF_DELTA_XOR;
  return mode;
}

Status DeltaAllowed(const HandoffMode& mode, bool allow_delta) {
  if (!allow_delta && mode.delta != HANDOFF_DELTA_NONE)
    return Invalid("mode " + ModeName(mode) +
                   " uses a delta, and deltas are not allowed");
  return Status::Ok();
}

}  // namespace

void SetAdaptive(bool allow_delta, HandoffEncoderConfig* config) {
  config->adaptive = 1;
  config->mode = kAdaptiveStart;
  config->allow_delta = allow_delta;
}

Status SetCompression(const char* text, int deltas,
                      HandoffEncoderConfig* config) {
  if (deltas != HANDOFF_DELTAS_OFF && deltas != HANDOFF_DELTAS_ON &&
      deltas != HANDOFF_DELTAS_AS_NAMED)
    return Invalid("delta policy " + std::to_string(deltas) +
                   " is not HANDOFF_DELTAS_OFF, _ON or _AS_NAMED");
  const bool allow_delta = deltas != HANDOFF_DELTAS_OFF;
  if (text == nullptr || std::strcmp(text, kAuto) == 0) {
    SetAdaptive(allow_delta, config);
    return Status::Ok();
  }
  HandoffMode mode;
  HANDOFF_RETURN_IF_ERROR(ParseMode(text, &mode));
  mode = WithDefaultDelta(mode, deltas);
  HANDOFF_RETURN_IF_ERROR(DeltaAllowed(mode, allow_delta));
  config->adaptive = 0;
  config->mode = mode;
  config->allow_delta = allow_delta;
  return Status::Ok();
}

Status CheckCompression(const HandoffEncoderConfig& config) {
  const HandoffMode& mode = config.mode;
  if (!CodecLevelValid(mode.codec, mode.level))
    return Invalid("mode level " + std::to_string(mode.level) +
                   " not valid for codec " + CodecName(mode.codec));
  if (mode.delta == HANDOFF_DELTA_PREFIX && mode.codec != HANDOFF_CODEC_ZSTD)
    return Invalid("prefix delta needs zstd");
  if (mode.delta < HANDOFF_DELTA_NONE || mode.delta > HANDOFF_DELTA_PREFIX)
    return Invalid("unknown delta mode");
  return DeltaAllowed(mode, config.allow_delta != 0);
}

}  // namespace handoff
