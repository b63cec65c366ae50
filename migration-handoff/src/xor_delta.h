// SPDX-License-Identifier: GPL-2.0-or-later
//
// The XOR pass of the XOR delta modes: a DATA chunk is sent as its XOR
// with the base chunk at the same place when that leaves more zero words,
// a cheap proxy for "compresses smaller" decided per chunk. It runs on a
// worker, over a frame's finished plaintext, because the producer is the
// serial part of the pipeline.
#ifndef HANDOFF_XOR_DELTA_H
#define HANDOFF_XOR_DELTA_H

#include <cstdint>
#include <string>

#include "base.h"
#include "status.h"

namespace handoff {

// Rewrites the DATA records of @plain in place where XOR pays; counts
// them in *@converted.
Status ApplyXorDelta(const Base& base, std::string* plain, uint64_t* converted);

}  // namespace handoff

#endif  // HANDOFF_XOR_DELTA_H
