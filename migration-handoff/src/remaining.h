// SPDX-License-Identifier: GPL-2.0-or-later
//
// How many stream bytes a sender still owes its receiver: what the caller
// has not submitted yet, priced at what sent chunks cost so far, plus
// what the workers hold and what waits to be pulled. The switch-over
// decision (is the rest small enough for the downtime?) rests on it.
#ifndef HANDOFF_REMAINING_H
#define HANDOFF_REMAINING_H

#include <cstdint>

#include "handoff.h"

namespace handoff {

uint64_t RemainingBytes(const HandoffEncoderStats& stats,
                        uint64_t chunks_to_submit);

}  // namespace handoff

#endif  // HANDOFF_REMAINING_H
