// SPDX-License-Identifier: GPL-2.0-or-later
//
// The order file of `qemu-handoff encode --segmented --order FILE`: which
// chunks' data a segmented stream carries first (e.g. a recorded working
// set). Text, one chunk per line: the region's name, blanks, the chunk
// index in decimal, and optionally blanks and a time in decimal (ignored);
// blank lines and lines starting with '#' are ignored. A file QEMU's
// handoff-record-stop wrote is one (docs/overlay-format.md, "Working-set
// order").
// The file is input from elsewhere: every line, name and number is
// bounded and checked, and it may list no more entries than the base has
// chunks.
#ifndef HANDOFF_TOOLS_ORDER_FILE_H
#define HANDOFF_TOOLS_ORDER_FILE_H

#include <string>
#include <vector>

#include "handoff.h"

namespace handoff_cli {

// Longest line read, name, blanks and index included.
inline constexpr size_t kMaxOrderLine = 128;

// Reads @path against @base's regions into *@order; false with *@err
// naming the file, line and cause.
bool ReadOrderFile(const std::string& path, const HandoffBase* base,
                   std::vector<HandoffChunkRef>* order, std::string* err);

}  // namespace handoff_cli

#endif  // HANDOFF_TOOLS_ORDER_FILE_H
