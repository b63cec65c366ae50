// SPDX-License-Identifier: GPL-2.0-or-later
#include "index_dir.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "handoff.h"

namespace handoff_fuzz {
namespace {

constexpr size_t kChunk = HANDOFF_CHUNK_SIZE;

[[noreturn]] void Fatal(const std::string& what) {
  fprintf(stderr, "index fuzz target: %s: %s\n", what.c_str(), strerror(errno));
  abort();
}

// Chunk @i of a file: some zero, some repeated within and across files
// (what the index's table deduplicates), the rest distinct.
void FillChunk(uint8_t* p, uint64_t file, uint64_t i) {
  if (i % 5 == 0) return;  // zero
  const uint64_t tag = i % 4 == 1 ? 1 : file * 1000 + i;
  uint64_t x = tag * 0x9E3779B97F4A7C15ull + 7;
  for (size_t k = 0; k < kChunk; k++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[k] = static_cast<uint8_t>(x);
  }
}

std::vector<uint8_t> FileContents(uint64_t file, uint64_t chunks, size_t tail) {
  std::vector<uint8_t> d(chunks * kChunk + tail, 0);
  for (uint64_t i = 0; i < chunks; i++) FillChunk(&d[i * kChunk], file, i);
  for (size_t k = 0; k < tail; k++) d[chunks * kChunk + k] = static_cast<uint8_t>(k);
  return d;
}

void WriteAll(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) Fatal("cannot create " + path);
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n <= 0) Fatal("cannot write " + path);
    data += n;
    size -= static_cast<size_t>(n);
  }
  close(fd);
}

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  remove(path);
  return 0;
}

std::string dir_to_remove;
void RemoveDir() { nftw(dir_to_remove.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS); }

IndexDir* MakeDir() {
  auto* d = new IndexDir;
  struct stat st;
  std::string tmpl = (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode))
                         ? "/dev/shm/handoff-index-fuzz.XXXXXX"
                         : "/tmp/handoff-index-fuzz.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) Fatal("cannot create " + tmpl);
  d->path = tmpl;
  d->index_path = d->path + "/base.hidx";
  dir_to_remove = d->path;
  atexit(RemoveDir);
  if (mkdir((d->path + "/sub").c_str(), 0700) != 0 ||
      mkdir((d->path + "/dir").c_str(), 0700) != 0)
    Fatal("cannot create directories in " + d->path);
  d->files = {{"mem.raw", FileContents(1, 16, 0)},
              {"disk.raw", FileContents(2, 8, 0)},
              {"sub/nested.raw", FileContents(3, 4, 100)},
              {"empty.raw", {}}};
  for (const IndexDirFile& f : d->files)
    WriteAll(d->path + "/" + f.name, f.data.data(), f.data.size());
  if (symlink("mem.raw", (d->path + "/link.raw").c_str()) != 0 ||
      symlink("..", (d->path + "/sub/up").c_str()) != 0 ||
      mkfifo((d->path + "/fifo").c_str(), 0600) != 0)
    Fatal("cannot create special files in " + d->path);
  d->refused = {"link.raw", "sub/up/mem.raw", "fifo", "dir", "sub",
                "missing.raw", "sub/missing.raw", "../mem.raw", "/dev/zero",
                "sub/../mem.raw", "./mem.raw", "sub//nested.raw", "",
                "mem.raw/", "link.raw/x", "mem.raw/x", "dir/",
                std::string(256, 'a'), std::string("mem\0raw", 7),
                "base.hidx"};
  return d;
}

}  // namespace

const IndexDir& GetIndexDir() {
  static IndexDir* dir = MakeDir();
  return *dir;
}

void WriteIndexFile(const uint8_t* data, size_t size) {
  WriteAll(GetIndexDir().index_path, data, size);
}

std::vector<std::vector<uint8_t>> MakeSeedIndexes() {
  const IndexDir& d = GetIndexDir();
  auto path = [&d](const char* name) { return d.path + "/" + name; };
  const std::string mem = path("mem.raw"), disk = path("disk.raw"),
                    nested = path("sub/nested.raw");
  const std::vector<std::vector<HandoffRegionSpec>> bases = {
      {{"pc.ram", HANDOFF_REGION_MEMORY, mem.c_str(), nullptr, 0},
       {"disk0", HANDOFF_REGION_DISK, disk.c_str(), nullptr, 0}},
      {{"disk0", HANDOFF_REGION_DISK, nested.c_str(), nullptr, 4 * kChunk}},
      {{"pc.ram", HANDOFF_REGION_MEMORY, mem.c_str(), nullptr, 8 * kChunk},
       {"vga.vram", HANDOFF_REGION_MEMORY, disk.c_str(), nullptr, 0},
       {"disk1", HANDOFF_REGION_DISK, nested.c_str(), nullptr, 2 * kChunk}},
  };
  std::vector<std::vector<uint8_t>> seeds;
  for (const auto& specs : bases) {
    HandoffBase* base = nullptr;
    if (handoff_base_create(specs.data(), specs.size(), d.index_path.c_str(),
                            &base) != 0)
      Fatal(std::string("handoff_base_create: ") + handoff_last_error_message());
    handoff_base_free(base);
    FILE* f = fopen(d.index_path.c_str(), "rb");
    if (f == nullptr) Fatal("cannot read " + d.index_path);
    std::vector<uint8_t> image;
    uint8_t buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof(buf), f)) > 0;)
      image.insert(image.end(), buf, buf + n);
    fclose(f);
    seeds.push_back(std::move(image));
  }
  return seeds;
}

}  // namespace handoff_fuzz
