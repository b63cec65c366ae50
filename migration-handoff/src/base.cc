// SPDX-License-Identifier: GPL-2.0-or-later
#include "base.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base_index.h"
#include "byte_io.h"
#include "workers.h"

namespace handoff {
void HashRegionDescriptors(XXH3_state_t* st, const std::vector<Region>& regions) {
  for (const Region& r : regions) {
    uint8_t b[8];
    b[0] = static_cast<uint8_t>(r.kind);
    b[1] = static_cast<uint8_t>(r.name.size());
    XXH3_128bits_update(st, b, 2);
    XXH3_128bits_update(st, r.name.data(), r.name.size());
    StoreLe<uint64_t>(b, r.size);
    XXH3_128bits_update(st, b, 8);
  }
}

namespace {

// Fewer chunks than this are hashed on the calling thread alone.
constexpr uint64_t kParallelChunks = 4096;
// Verification reads files this many chunks at a time.
constexpr size_t kVerifyBlockChunks = 256;
Status Corrupt(const std::string& why) {
  return Status(HANDOFF_E_INDEX_CORRUPT, "base index corrupt: " + why);
}

Status IoError(const std::string& what) {
  return Status(HANDOFF_E_IO, what + ": " + std::strerror(errno));
}

// The base's identity (docs/stream-format.md, "Base ID"), from its
// geometry and chunk hashes. Create computes it and Open recomputes it,
// so an index cannot claim an ID its hashes do not give.
Status ContentId(const Geometry& g, const Hash128* hashes, uint8_t id[16]) {
  XXH3_state_t* st = XXH3_createState();
  if (st == nullptr) return Status(HANDOFF_E_NO_MEMORY, "XXH3_createState");
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, "QHOFBASE", 8);
  HashRegionDescriptors(st, g.regions());
  XXH3_128bits_update(st, hashes, g.total_chunks() * sizeof(Hash128));
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
  XXH3_freeState(st);
  std::memcpy(id, canon.digest, 16);
  return Status::Ok();
}

void HashRange(const Geometry& g, const std::vector<const uint8_t*>& data,
               uint64_t begin, uint64_t end, Hash128* out) {
  if (begin >= end) return;
  uint32_t r;
  uint64_t i;
  g.Locate(begin, &r, &i);
  for (uint64_t c = begin; c < end; c++) {
    while (i >= g.regions()[r].chunks()) {
      r++;
      i = 0;
    }
    out[c] = HashChunk(data[r] + (i << kChunkShift));
    i++;
  }
}

Status HashAll(const Geometry& g, const std::vector<const uint8_t*>& data,
               std::vector<Hash128>* out) {
  const uint64_t total = g.total_chunks();
  out->assign(total, Hash128{});
  const unsigned workers = total < kParallelChunks ? 1 : DefaultWorkers();
  return RunParallel(workers, [&](unsigned w) {
    HashRange(g, data, total * w / workers, total * (w + 1) / workers,
              out->data());
  });
}

// @s fit for a message: names read from an index may hold any byte.
std::string Printable(const std::string& s) {
  std::string o;
  for (const unsigned char c : s) {
    if (c >= 0x20 && c != 0x7f) {
      o += static_cast<char>(c);
    } else {
      char b[8];
      snprintf(b, sizeof(b), "\\x%02x", c);
      o += b;
    }
  }
  return o;
}

std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Opens @name (which passed CheckFileName) beneath the directory open as
// @dir, one component at a time and following no symbolic link, so that
// neither the index nor a link planted among the base files can lead
// outside the base directory. @what names the file in messages.
Status OpenBeneath(int dir, const std::string& name, const std::string& what,
                   int* out) {
  UniqueFd held;  // the directory opened last, when not @dir
  for (size_t start = 0;;) {
    const size_t slash = name.find('/', start);
    const bool last = slash == std::string::npos;
    const std::string part = name.substr(start, slash - start);
    // O_NONBLOCK: a FIFO put in place of a base file opens at once, to be
    // refused as not a regular file, instead of blocking the open.
    const int flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
                      (last ? O_NONBLOCK | O_NOCTTY : O_DIRECTORY);
    const int at = held.get() >= 0 ? held.get() : dir;
    const int fd = openat(at, part.c_str(), flags);
    if (fd < 0) {
      const int err = errno;
      const std::string where = what + ": '" + Printable(name.substr(0, slash)) + "' ";
      // A link met as a directory fails as "not a directory": look, only
      // to say which.
      struct stat st;
      if (err == ELOOP || (err == ENOTDIR && fstatat(at, part.c_str(), &st,
                                                     AT_SYMLINK_NOFOLLOW) == 0 &&
                           S_ISLNK(st.st_mode)))
        return Status(HANDOFF_E_BASE_CHANGED, where + "is a symbolic link");
      if (err == ENOTDIR)
        return Status(HANDOFF_E_BASE_CHANGED, where + "is not a directory");
      if (err == ENOENT) return Status(HANDOFF_E_BASE_CHANGED, where + "does not exist");
      return Status(HANDOFF_E_IO, where + "cannot be opened: " + std::strerror(err));
    }
    if (last) {
      *out = fd;
      return Status::Ok();
    }
    held.reset(fd);
    start = slash + 1;
  }
}

// Opens region file @name beneath @dir as a regular file.
Status OpenRegionFile(int dir, const std::string& name, const std::string& what,
                      std::unique_ptr<MappedFile>* out) {
  int fd = -1;
  HANDOFF_RETURN_IF_ERROR(OpenBeneath(dir, name, what, &fd));
  UniqueFd guard(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return IoError(what + ": cannot stat");
  if (!S_ISREG(st.st_mode))
    return Status(HANDOFF_E_BASE_CHANGED, what + ": not a regular file");
  auto file = std::make_unique<MappedFile>();
  HANDOFF_RETURN_IF_ERROR(file->OpenFd(guard.release(), name));
  *out = std::move(file);
  return Status::Ok();
}

std::string FileWhat(const std::string& name, const std::string& region) {
  return "base file '" + Printable(name) + "' of region '" + Printable(region) + "'";
}

// pread of exactly @len bytes: 0, or -1 with errno set, or 1 when the
// file ends first.
int ReadFully(int fd, uint8_t* buf, size_t len, uint64_t offset) {
  while (len > 0) {
    const ssize_t n = pread(fd, buf, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return 1;
    buf += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return 0;
}

}  // namespace

Status Base::AddSource(const RegionSource& src, int dir,
                       const std::string& dir_path, Region* region) {
  Backing b;
  if (src.path.empty()) {
    if (src.data == nullptr)
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "region '" + region->name + "' has neither path nor data");
    if (dir >= 0)
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "region '" + region->name +
                        "' is in memory: a saved index needs files");
    region_data_.push_back(src.data);
    backing_.push_back(std::move(b));
    return Status::Ok();
  }
  if (dir < 0) {
    // Nothing saved: the file is only mapped, and named as given.
    b.name = src.path;
    b.file = std::make_unique<MappedFile>();
    HANDOFF_RETURN_IF_ERROR(b.file->Open(src.path));
  } else {
    char resolved[PATH_MAX];
    if (realpath(src.path.c_str(), resolved) == nullptr)
      return IoError("cannot resolve '" + src.path + "'");
    const std::string abs = resolved;
    const std::string prefix = dir_path == "/" ? "/" : dir_path + "/";
    if (abs.compare(0, prefix.size(), prefix) != 0)
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "region '" + region->name + "': file '" + src.path +
                        "' is not inside the index's directory '" + dir_path +
                        "' (base files are recorded relative to it)");
    b.name = abs.substr(prefix.size());
    const std::string why = CheckIndexFileName(b.name);
    if (!why.empty())
      return Status(HANDOFF_E_INVALID_ARGUMENT,
                    "region '" + region->name + "': file '" + src.path +
                        "' cannot be recorded: " + why);
    Status s = OpenRegionFile(dir, b.name, FileWhat(b.name, region->name), &b.file);
    // What Open would call a changed base is here a bad argument (or a
    // file replaced since realpath looked).
    if (!s.ok())
      return Status(s.code() == HANDOFF_E_IO ? HANDOFF_E_IO
                                             : HANDOFF_E_INVALID_ARGUMENT,
                    s.message());
  }
  b.file_size = b.file->size();
  if (region->size == 0) region->size = b.file_size;
  if (region->size > b.file_size)
    return Status(HANDOFF_E_INVALID_ARGUMENT,
                  "region '" + region->name + "' larger than file '" +
                      src.path + "'");
  b.file->AdviseSequential();
  region_data_.push_back(b.file->data());
  backing_.push_back(std::move(b));
  return Status::Ok();
}

Status Base::Create(const std::vector<RegionSource>& sources,
                    const std::string& index_path, std::unique_ptr<Base>* out) {
  std::unique_ptr<Base> base(new Base());
  UniqueFd dir;
  std::string dir_path;
  if (!index_path.empty()) {
    const std::string d = DirName(index_path);
    char resolved[PATH_MAX];
    if (realpath(d.c_str(), resolved) == nullptr)
      return IoError("cannot resolve the index's directory '" + d + "'");
    dir_path = resolved;
    dir.reset(open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) return IoError("cannot open directory '" + dir_path + "'");
  }
  std::vector<Region> regions;
  for (const RegionSource& src : sources) {
    Region region = src.region;
    HANDOFF_RETURN_IF_ERROR(base->AddSource(src, dir.get(), dir_path, &region));
    regions.push_back(region);
  }
  base->geometry_ = Geometry(std::move(regions));
  HANDOFF_RETURN_IF_ERROR(base->geometry_.Validate());

  // Writing the index must not replace or truncate a base file.
  for (const std::string& path : {index_path, TemporaryPathFor(index_path)}) {
    struct stat st, rs;
    if (index_path.empty() || stat(path.c_str(), &st) != 0) continue;
    for (size_t r = 0; r < base->backing_.size(); r++) {
      const Backing& b = base->backing_[r];
      if (b.file && fstat(b.file->fd(), &rs) == 0 && rs.st_dev == st.st_dev &&
          rs.st_ino == st.st_ino)
        return Status(HANDOFF_E_INVALID_ARGUMENT,
                      "index '" + path + "' is " +
                          FileWhat(b.name, base->geometry_.regions()[r].name) +
                          ": refusing to overwrite it");
    }
  }

  std::vector<Hash128> hashes;
  HANDOFF_RETURN_IF_ERROR(HashAll(base->geometry_, base->region_data_, &hashes));
  HANDOFF_RETURN_IF_ERROR(ContentId(base->geometry_, hashes.data(), base->id_));
  std::vector<IndexedFile> files;
  for (const Backing& b : base->backing_) files.push_back({b.name, b.file_size});
  const Base& made = *base;
  const std::string image = BuildBaseIndex(
      made.geometry_, files, made.id_, hashes,
      [&made](uint64_t c) { return IsZeroChunk(made.ChunkGlobal(c)); });
  if (!index_path.empty())
    HANDOFF_RETURN_IF_ERROR(WriteFileAtomically(index_path, image));
  base->owned_.resize((image.size() + 7) / 8);
  std::memcpy(base->owned_.data(), image.data(), image.size());
  // The regions are already mapped: attach the image without reopening.
  HANDOFF_RETURN_IF_ERROR(base->AttachIndex(
      reinterpret_cast<const uint8_t*>(base->owned_.data()), image.size(), -1));
  *out = std::move(base);
  return Status::Ok();
}

Status Base::AttachIndex(const uint8_t* p, size_t size, int index_dir) {
  BaseIndex index;
  HANDOFF_RETURN_IF_ERROR(ParseBaseIndex(p, size, &index));
  geometry_ = std::move(index.geometry);
  distinct_ = index.distinct;
  std::memcpy(id_, index.content_id, 16);
  hashes_ = index.hashes;
  table_ = index.table;
  mask_ = index.slots - 1;
  if (index_dir < 0) return Status::Ok();  // Create: regions attached

  // The ID is what streams are matched by: it must be the one these
  // hashes give, whatever the header says.
  uint8_t id[16];
  HANDOFF_RETURN_IF_ERROR(ContentId(geometry_, hashes_, id));
  if (std::memcmp(id, id_, 16) != 0)
    return Corrupt("content ID does not match the index's hashes");

  for (size_t i = 0; i < index.files.size(); i++) {
    Backing b;
    b.name = index.files[i].name;
    b.file_size = index.files[i].size;
    const std::string what = FileWhat(b.name, geometry_.regions()[i].name);
    const std::string why = CheckIndexFileName(b.name);
    if (!why.empty()) return Corrupt(what + ": " + why);
    HANDOFF_RETURN_IF_ERROR(OpenRegionFile(index_dir, b.name, what, &b.file));
    if (b.file->size() != b.file_size)
      return Status(HANDOFF_E_BASE_CHANGED,
                    what + " is " + std::to_string(b.file->size()) +
                        " bytes, the index recorded " +
                        std::to_string(b.file_size) +
                        ": the file changed since the base was indexed");
    region_data_.push_back(b.file->data());
    backing_.push_back(std::move(b));
  }
  return Status::Ok();
}

Status Base::Open(const std::string& index_path, std::unique_ptr<Base>* out) {
  // Region files are found beneath the directory that really holds the
  // index, wherever a link to it was.
  char resolved[PATH_MAX];
  if (realpath(index_path.c_str(), resolved) == nullptr)
    return IoError("cannot open base index '" + index_path + "'");
  const std::string real = resolved;
  const std::string dir_path = DirName(real);
  UniqueFd dir(open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return IoError("cannot open directory '" + dir_path + "'");
  std::unique_ptr<Base> base(new Base());
  HANDOFF_RETURN_IF_ERROR(base->index_file_.Open(real));
  HANDOFF_RETURN_IF_ERROR(base->AttachIndex(
      base->index_file_.data(), base->index_file_.size(), dir.get()));
  *out = std::move(base);
  return Status::Ok();
}

// What the workers of Verify found. Plain data: workers must not
// allocate (an exception cannot leave a thread), messages are made after.
struct Base::VerifyTally {
  uint64_t differ[HANDOFF_MAX_REGIONS] = {};
  uint64_t first[HANDOFF_MAX_REGIONS] = {};  // valid where differ != 0
  int error = 0;         // errno of a failed read
  bool ended = false;    // a file ended before its region
  uint32_t error_region = 0;
  uint64_t error_offset = 0;
};

Status Base::Read(uint32_t r, uint64_t offset, uint8_t* buf, size_t len) const {
  if (parent_ != nullptr && r < parent_->geometry().region_count())
    return parent_->Read(r, offset, buf, len);
  if (!backing_[r].file) {
    std::memcpy(buf, region_data_[r] + offset, len);
    return Status::Ok();
  }
  const int rc = ReadFully(backing_[r].file->fd(), buf, len, offset);
  if (rc < 0) {
    const int error = errno;  // before building the message
    return Status(HANDOFF_E_IO, "cannot read " + FileWhat(backing_[r].name,
                                                          geometry_.regions()[r].name) +
                                    ": " + std::strerror(error));
  }
  if (rc > 0) {
    return Status(HANDOFF_E_BASE_CHANGED,
                  FileWhat(backing_[r].name, geometry_.regions()[r].name) +
                      " is shorter than when the base was opened");
  }
  return Status::Ok();
}

void Base::VerifyRange(uint64_t begin, uint64_t end, uint8_t* buf,
                       VerifyTally* t) const {
  for (uint32_t r = 0; r < geometry_.region_count(); r++) {
    const uint64_t first = geometry_.first_chunk(r);
    const uint64_t lo = std::max(begin, first);
    const uint64_t hi = std::min(end, first + geometry_.regions()[r].chunks());
    for (uint64_t c = lo; c < hi;) {
      const uint64_t n = std::min<uint64_t>(hi - c, kVerifyBlockChunks);
      const uint64_t offset = (c - first) << kChunkShift;
      const uint8_t* data = region_data_[r] + offset;
      if (backing_[r].file) {
        // Read, not the mapping: a file cut short since it was mapped
        // must give an error here, not SIGBUS.
        const int rc = ReadFully(backing_[r].file->fd(), buf, n << kChunkShift, offset);
        if (rc != 0) {
          t->error = rc < 0 ? errno : 0;
          t->ended = rc > 0;
          t->error_region = r;
          t->error_offset = offset;
          return;
        }
        data = buf;
      }
      for (uint64_t i = 0; i < n; i++) {
        if (HashChunk(data + (i << kChunkShift)) == hashes_[c + i]) continue;
        if (t->differ[r]++ == 0) t->first[r] = c + i - first;
      }
      c += n;
    }
  }
}

Status Base::Verify() const {
  if (parent_ != nullptr) return parent_->Verify();
  const Geometry& g = geometry_;
  for (size_t r = 0; r < g.region_count(); r++) {
    const Backing& b = backing_[r];
    if (!b.file) continue;
    struct stat st;
    const std::string what = FileWhat(b.name, g.regions()[r].name);
    if (fstat(b.file->fd(), &st) != 0) return IoError(what + ": cannot stat");
    if (static_cast<uint64_t>(st.st_size) != b.file_size)
      return Status(HANDOFF_E_BASE_CHANGED,
                    what + " is now " + std::to_string(st.st_size) +
                        " bytes, the index recorded " +
                        std::to_string(b.file_size));
  }
  const uint64_t total = g.total_chunks();
  const unsigned workers = total < kParallelChunks ? 1 : DefaultWorkers();
  std::vector<VerifyTally> tallies(workers);
  std::vector<std::vector<uint8_t>> bufs(
      workers, std::vector<uint8_t>(kVerifyBlockChunks * kChunkSize));
  HANDOFF_RETURN_IF_ERROR(RunParallel(workers, [&](unsigned w) {
    VerifyRange(total * w / workers, total * (w + 1) / workers, bufs[w].data(),
                &tallies[w]);
  }));

  uint64_t differ[HANDOFF_MAX_REGIONS] = {}, first[HANDOFF_MAX_REGIONS] = {};
  // Workers cover ascending ranges: the first that found a difference in
  // a region found its first one.
  for (const VerifyTally& t : tallies) {
    if (t.error != 0 || t.ended) {
      const std::string what =
          FileWhat(backing_[t.error_region].name, g.regions()[t.error_region].name);
      if (t.ended)
        return Status(HANDOFF_E_BASE_CHANGED,
                      what + " ended before byte " +
                          std::to_string(t.error_offset) + " while verifying");
      errno = t.error;
      return IoError(what + ": cannot read at byte " + std::to_string(t.error_offset));
    }
    for (size_t r = 0; r < g.region_count(); r++) {
      if (t.differ[r] != 0 && differ[r] == 0) first[r] = t.first[r];
      differ[r] += t.differ[r];
    }
  }
  size_t bad = g.region_count();
  uint64_t others = 0, other_regions = 0;
  for (size_t r = 0; r < g.region_count(); r++) {
    if (differ[r] == 0) continue;
    if (bad == g.region_count()) {
      bad = r;
    } else {
      others += differ[r];
      other_regions++;
    }
  }
  if (bad == g.region_count()) return Status::Ok();
  const Region& region = g.regions()[bad];
  const std::string file = backing_[bad].file
                               ? "file '" + Printable(backing_[bad].name) + "'"
                               : std::string("in memory");
  std::string msg = "region '" + Printable(region.name) + "', " + file + ": " +
                    std::to_string(differ[bad]) + " of " +
                    std::to_string(region.chunks()) +
                    " chunks differ from the index, the first is chunk " +
                    std::to_string(first[bad]) + " (bytes " +
                    std::to_string(first[bad] << kChunkShift) + ".." +
                    std::to_string(((first[bad] + 1) << kChunkShift) - 1) + ")";
  if (others != 0)
    msg += "; " + std::to_string(others) + " more in " +
           std::to_string(other_regions) + " other region(s)";
  return Status(HANDOFF_E_BASE_CHANGED, msg);
}

bool Base::Find(const Hash128& h, const uint8_t* data, uint64_t* global) const {
  const uint64_t total = geometry_.total_chunks();
  for (uint64_t slot = FirstProbe(h, mask_ + 1), probes = 0; probes <= mask_;
       slot = (slot + 1) & mask_, probes++) {
    uint64_t v = table_[slot];
    if (v == 0) return false;
    uint64_t g = v - 1;
    // A corrupt table entry only costs a miss: every hit is byte-checked.
    if (g >= total) continue;
    if (hashes_[g] == h) {
      if (std::memcmp(ChunkGlobal(g), data, kChunkSize) != 0) return false;
      *global = g;
      return true;
    }
  }
  return false;
}

}  // namespace handoff
