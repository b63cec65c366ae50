// SPDX-License-Identifier: GPL-2.0-or-later
//
// Compression modes by name: "none", "zstd-3", "lzma-1+xor",
// "zstd-9+prefix". The one spelling QEMU's parameters, the CLI, the
// controller's decision log and the statistics all use.
#ifndef HANDOFF_MODE_H
#define HANDOFF_MODE_H

#include <string>

#include "handoff.h"
#include "status.h"

namespace handoff {

std::string ModeName(const HandoffMode& mode);

// Parses a name as ModeName writes it; levels outside the codec's range
// (handoff_codec_info) are refused with a message giving the range.
Status ParseMode(const std::string& text, HandoffMode* mode);

}  // namespace handoff

#endif  // HANDOFF_MODE_H
