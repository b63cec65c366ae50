// SPDX-License-Identifier: GPL-2.0-or-later
//
// Chunk records: the plaintext of a frame is a sequence of these (layout
// in docs/stream-format.md, "Plaintext: records"). RecordWriter is the
// only code that writes record bytes and RecordIterator the only code
// that reads them: the encoder, the XOR pass, the decoder and the
// fuzzer's checksum repair all go through them.
#ifndef HANDOFF_RECORD_H
#define HANDOFF_RECORD_H

#include <cstddef>
#include <cstdint>
#include <string>

#include "geometry.h"
#include "record_kind.h"
#include "status.h"

namespace handoff {

inline constexpr size_t kRecordHeaderSize = 24;
inline constexpr uint8_t kRecordFlagXor = 1;  // DATA only
// ZERO only (stream version 2): a run of `count` chunks from `index`, so
// that a discarded disk range costs one record, and the destination can
// deallocate it instead of writing zeros chunk by chunk.
inline constexpr uint8_t kRecordFlagRun = 2;
// DATA only (stream version 3): a self reference in this or a later
// segment names this version, so a segmented decoder keeps its bytes until
// the last segment that may reference it is applied (it never reads the
// destination back: a running guest may have rewritten it).
inline constexpr uint8_t kRecordFlagPinned = 4;

// Bytes that follow the header of a record of @kind with @flags.
size_t RecordBodySize(RecordKind kind, uint8_t flags);

struct Record {
  RecordKind kind = RecordKind::kZero;
  uint8_t region = 0;
  uint8_t flags = 0;
  uint32_t iteration = 0;
  uint64_t seq = 0;
  uint64_t index = 0;
  // BASE_REF / SELF_REF source; SELF_REF source sequence number.
  uint8_t src_region = 0;
  uint64_t src_index = 0;
  uint64_t src_seq = 0;
  uint64_t count = 1;  // chunks from index: ZERO with kRecordFlagRun, else 1
  const uint8_t* data = nullptr;  // DATA: 4096 bytes (inside the plaintext
                                  // when read back)
  size_t offset = 0;              // read back: where the record starts
};

// Appends records to the plaintext of a frame being built.
class RecordWriter {
 public:
  explicit RecordWriter(std::string* plain) : plain_(plain) {}

  // Appends @rec, header and body (for DATA, the 4096 bytes at rec.data).
  void Append(const Record& rec);

  // A DATA record in two steps, so that a chunk that may change under us
  // is copied once and every decision concerns the bytes that are sent:
  // Stage appends room for the header and a copy of @chunk and returns
  // where; then either Commit writes the header of @rec (whose data is
  // the staged copy) there, or Unstage removes both again. Nothing may be
  // appended in between.
  size_t Stage(const uint8_t* chunk);
  const uint8_t* Staged(size_t at) const;
  void Commit(size_t at, const Record& rec);
  void Unstage(size_t at);

  // Replaces the chunk of DATA record @rec (as read back from this
  // plaintext) by @delta, its XOR with the base chunk, and flags it so.
  void RewriteAsXor(const Record& rec, const uint8_t* delta);

 private:
  void PutHeader(size_t at, const Record& rec);

  std::string* plain_;
};

// Reads the records of a frame's plaintext in order, trusting no field:
// each is checked for what needs no context (kind, flags, reserved bytes,
// sequence number 0, length); a failure is HANDOFF_E_BAD_RECORD.
class RecordIterator {
 public:
  RecordIterator(const uint8_t* plain, size_t len) : p_(plain), len_(len) {}

  // Reads the next record into *@rec: false at the end of the plaintext
  // or at a record that does not parse (then status() says why).
  bool Next(Record* rec);
  const Status& status() const { return status_; }

 private:
  Status Parse(Record* rec);

  const uint8_t* p_;
  size_t len_;
  size_t pos_ = 0;
  Status status_;
};

}  // namespace handoff

#endif  // HANDOFF_RECORD_H
