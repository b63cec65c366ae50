// SPDX-License-Identifier: GPL-2.0-or-later
//
// The private directory of the base index target: the region files a
// fuzzed index may name, made once per process (in tmpfs when there is
// one) and removed at exit, beside entries a base must refuse (a link,
// a FIFO, a directory), and the index path every input is written to.
#ifndef HANDOFF_FUZZ_INDEX_DIR_H
#define HANDOFF_FUZZ_INDEX_DIR_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace handoff_fuzz {

struct IndexDirFile {
  std::string name;           // relative to the directory
  std::vector<uint8_t> data;  // its contents
};

struct IndexDir {
  std::string path;
  std::string index_path;             // path + "/base.hidx"
  std::vector<IndexDirFile> files;    // the regular files
  // Names that must not open as region files: a link, a FIFO, a
  // directory, missing files, paths leaving the directory or malformed.
  std::vector<std::string> refused;
};

const IndexDir& GetIndexDir();

// Replaces the index file's contents by @data.
void WriteIndexFile(const uint8_t* data, size_t size);

// Indexes handoff_base_create writes over the directory's files.
std::vector<std::vector<uint8_t>> MakeSeedIndexes();

}  // namespace handoff_fuzz

#endif  // HANDOFF_FUZZ_INDEX_DIR_H
