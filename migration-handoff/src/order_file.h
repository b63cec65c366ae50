// SPDX-License-Identifier: GPL-2.0-or-later
//
// Order files: which chunks' data a segmented stream carries first (e.g.
// a recorded working set), read by `qemu-handoff encode --order FILE` and
// by QEMU's handoff-overlay-save early-start-order through
// handoff_order_file_read, so that the format has one reader. Text, one
// chunk per line: the region's name, blanks, the chunk index in decimal,
// and optionally blanks and a time in decimal (ignored); blank lines and
// lines starting with '#' are ignored. A file QEMU's handoff-record-stop
// wrote is one (docs/overlay-format.md, "Working-set order").
// The file is input from elsewhere: every line, name and number is
// bounded and checked, and it may list no more entries than the base has
// chunks.
#ifndef HANDOFF_ORDER_FILE_H
#define HANDOFF_ORDER_FILE_H

#include <string>
#include <vector>

#include "geometry.h"
#include "handoff.h"
#include "status.h"

namespace handoff {

// Longest line read, name, blanks, index and time included.
inline constexpr size_t kMaxOrderLine = 128;

// Reads @path against @geometry's regions into *@order. Errors name the
// file, line and cause: HANDOFF_E_IO (cannot open or read),
// HANDOFF_E_INVALID_ARGUMENT (a line that is not an entry, a region the
// geometry lacks, a chunk past its region, more entries than chunks).
Status ReadOrderFile(const std::string& path, const Geometry& geometry,
                     std::vector<HandoffChunkRef>* order);

}  // namespace handoff

#endif  // HANDOFF_ORDER_FILE_H
