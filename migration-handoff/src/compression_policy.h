// SPDX-License-Identifier: GPL-2.0-or-later
//
// The compression policy: what "auto" or a mode name, with a delta policy
// (QEMU's handoff-compression and handoff-delta, the tool's --codec,
// --level, --delta and --modes), makes of an encoder configuration's
// adaptive, mode and allow_delta: where adaptive compression starts, when
// a mode gets XOR. Decided here only; the encoder checks the invariants of
// whatever configuration it is given (CheckCompression), since a C caller
// may fill one by hand.
#ifndef HANDOFF_COMPRESSION_POLICY_H
#define HANDOFF_COMPRESSION_POLICY_H

#include "handoff.h"
#include "status.h"

namespace handoff {

// Adaptive compression from the engine's starting mode, with or without
// deltas among the modes the controller may choose.
void SetAdaptive(bool allow_delta, HandoffEncoderConfig* config);

// handoff_encoder_config_set_compression: @text is "auto" (nullptr too)
// or a mode name, @deltas a HandoffDeltaPolicy. Writes only adaptive,
// mode and allow_delta, and nothing on failure.
Status SetCompression(const char* text, int deltas,
                      HandoffEncoderConfig* config);

// The invariants of @config's mode and allow_delta: a level within the
// codec's range, a prefix only with zstd, a known delta, and a delta only
// when deltas are allowed.
Status CheckCompression(const HandoffEncoderConfig& config);

}  // namespace handoff

#endif  // HANDOFF_COMPRESSION_POLICY_H
