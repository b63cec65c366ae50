// SPDX-License-Identifier: GPL-2.0-or-later
//
// MappedFile: a read-only memory mapping of a whole file, so that base
// images and indexes are paged in on demand instead of read up front.
#ifndef HANDOFF_MAPPED_FILE_H
#define HANDOFF_MAPPED_FILE_H

#include <cstddef>
#include <cstdint>
#include <string>

#include "status.h"

namespace handoff {

struct FileIdentity {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

Status StatFile(const std::string& path, FileIdentity* id);

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  Status Open(const std::string& path);
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Hint that the mapping will be read front to back once.
  void AdviseSequential() const;

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes @data to @path atomically (temporary file, fsync, rename).
Status WriteFileAtomically(const std::string& path, const std::string& data);

}  // namespace handoff

#endif  // HANDOFF_MAPPED_FILE_H
