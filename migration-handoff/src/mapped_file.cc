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

Status StatFile(const std::string& path, FileIdentity* id) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return IoError("cannot stat", path);
  id->size = static_cast<uint64_t>(st.st_size);
  id->mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                 st.st_mtim.tv_nsec;
  return Status::Ok();
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(data_, size_);
}

Status MappedFile::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    Status s = IoError("cannot stat", path);
    close(fd);
    return s;
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ != 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      Status s = IoError("cannot map", path);
      close(fd);
      size_ = 0;
      return s;
    }
    data_ = static_cast<uint8_t*>(p);
  }
  close(fd);
  return Status::Ok();
}

void MappedFile::AdviseSequential() const {
  if (data_ != nullptr) madvise(data_, size_, MADV_SEQUENTIAL | MADV_WILLNEED);
}

Status WriteFileAtomically(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
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
