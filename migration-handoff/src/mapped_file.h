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

// A file descriptor closed when it goes out of scope.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  void reset(int fd);
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  Status Open(const std::string& path);
  // Maps the file open as @fd, which the mapping then owns; @name is for
  // messages. For files opened by the caller's own rules (base files are
  // opened beneath their directory without following links).
  Status OpenFd(int fd, const std::string& name);
  // Maps @size bytes of zeros, read-only and backed by nothing: the
  // contents of a region a base does not have (Base::Extend).
  Status MapZeros(size_t size);
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // The descriptor stays open so that the file can be read again as it is
  // now (base verification), not only as mapped.
  int fd() const { return fd_; }
  // Hint that the mapping will be read front to back once.
  void AdviseSequential() const;

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

// Writes @data to @path atomically (temporary file, fsync, rename).
Status WriteFileAtomically(const std::string& path, const std::string& data);
// The temporary file WriteFileAtomically(@path) creates and truncates.
std::string TemporaryPathFor(const std::string& path);

}  // namespace handoff

#endif  // HANDOFF_MAPPED_FILE_H
