// SPDX-License-Identifier: GPL-2.0-or-later
//
// The walk and report of `qemu-handoff inspect` over a stream in memory,
// apart from the command so that the inspect fuzz target can call it on
// arbitrary bytes.
#ifndef HANDOFF_TOOLS_INSPECT_H
#define HANDOFF_TOOLS_INSPECT_H

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "format.h"

namespace handoff_cli {

// Summarises the stream @data of @size bytes (which may be null when
// @size is 0) on @out, as JSON with @json; says on @err where a damaged or
// truncated stream stops. 0 for a complete stream, 1 otherwise.
int InspectStream(const uint8_t* data, size_t size, bool json, FILE* out,
                  FILE* err);

// A segmented stream (version 3; inspect_segments.cc): its table part and
// each segment, checked against its SHA-256 where the file holds it.
bool IsSegmentedStream(const uint8_t* data, size_t size);
int InspectSegmentedStream(const uint8_t* data, size_t size, bool json,
                           FILE* out, FILE* err);

// Shared by both reports: the header's regions as a JSON array, and the
// first lines of the text report.
std::string RegionsJson(const handoff::StreamHeader& header);
void PrintHeaderText(const handoff::StreamHeader& header, const char* state,
                     size_t bytes, FILE* out);

}  // namespace handoff_cli

#endif  // HANDOFF_TOOLS_INSPECT_H
