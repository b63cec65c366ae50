// SPDX-License-Identifier: GPL-2.0-or-later
//
// A stream taken apart for the fuzz targets' mutators: header, frames
// with their plaintext (when it decodes against the fuzz base) and end
// record. A mutator changes records and frames in the model; putting it
// back together recompresses what changed and recomputes every length,
// check value and end-record total with the engine's own format code, so
// that the mutated stream passes the integrity checks and the decoder
// gets to judge what the records mean.
#ifndef HANDOFF_FUZZ_STREAM_MODEL_H
#define HANDOFF_FUZZ_STREAM_MODEL_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "format.h"
#include "record.h"

namespace handoff_fuzz {

struct ModelFrame {
  handoff::FrameHeader header;   // as found; lengths and checks redone
  std::string payload;           // as found, or encoded again
  std::vector<uint64_t> prefix;  // PREFIX frames: the prefix list
  bool decoded = false;          // plain holds the frame's plaintext
  bool dirty = false;            // plain changed: encode it again
  std::string plain;
};

struct StreamModel {
  std::string header;  // the stream header, as found (it parsed)
  std::vector<ModelFrame> frames;
  bool has_end = false;  // the frames were followed by an end record
  std::string tail;      // bytes after the end record or after the last
                         // part that could be found
};

// Takes the stream @data apart, decompressing the frames when @decode;
// false when its header does not parse.
bool ParseStream(const uint8_t* data, size_t size, bool decode,
                 StreamModel* out);

// Puts @m back together. Dirty frames are compressed again with their
// codec and level (stored when that fails) and get new lengths,
// plaintext checksum and record count; every frame header is resealed;
// the end record, if any, gets the frame count, the plaintext bytes the
// frame headers declare, records counted over the decoded frames, the
// stream length and digest.
std::string SerializeStream(StreamModel* m);

// The records of @plain that parse, in order; *@rest_at is where the
// first one that does not parse starts (plain.size() when all do).
std::vector<handoff::Record> ParseRecords(const std::string& plain,
                                          size_t* rest_at);

// Mends, in place, the check values of a stream whose bytes were mutated
// blindly (header, frame headers, stored frames' plaintext fields, end
// record), taking lengths as found, so that such mutations also reach
// record parsing instead of stopping at the first checksum.
void RepairStream(uint8_t* data, size_t size);

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_STREAM_MODEL_H
