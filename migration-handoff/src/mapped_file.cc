// SPDX-License-Identifier: GPL-2.0-or-later
#include "mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace handoff {
namespace {

Status IoError(const std::string& what, const std::string& path) {
  return Status(HANDOFF_E_IO, what + " '" + path + "': " + std::strerror(errno));
}

}  // namespace

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(data_, size_);
  if (fd_ >= 0) close(fd_);
}

Status MappedFile::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open", path);
  return OpenFd(fd, path);
}

Status MappedFile::OpenFd(int fd, const std::string& name) {
  UniqueFd owned(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return IoError("cannot stat", name);
  const size_t size = static_cast<size_t>(st.st_size);
  if (size != 0) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return IoError("cannot map", name);
    data_ = static_cast<uint8_t*>(p);
  }
  size_ = size;
  fd_ = owned.release();
  return Status::Ok();
}

Status MappedFile::MapZeros(size_t size) {
  if (size != 0) {
    void* p = mmap(nullptr, size, PROT_READ,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      return Status(HANDOFF_E_NO_MEMORY, "cannot map " + std::to_string(size) +
                                             " bytes of zeros");
    data_ = static_cast<uint8_t*>(p);
  }
  size_ = size;
  return Status::Ok();
}

void MappedFile::AdviseSequential() const {
  if (data_ != nullptr) madvise(data_, size_, MADV_SEQUENTIAL | MADV_WILLNEED);
}

std::string TemporaryPathFor(const std::string& path) { return path + ".tmp"; }

Status WriteFileAtomically(const std::string& path, const std::string& data) {
  std::string tmp = TemporaryPathFor(path);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create", tmp);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status s = IoError("cannot write", tmp);
      close(fd);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) return IoError("cannot flush", tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return IoError("cannot rename", tmp);
  return Status::Ok();
}

}  // namespace handoff
