// SPDX-License-Identifier: GPL-2.0-or-later
#include "cli.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

namespace handoff_cli {

Args::Args(int argc, char** argv, int first,
           const std::vector<std::string>& flags) {
  for (int i = first; i < argc; i++) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      bool is_flag = false;
      for (const auto& f : flags) is_flag = is_flag || f == a;
      if (is_flag) {
        options_[a].push_back("1");
      } else if (i + 1 < argc) {
        options_[a].push_back(argv[++i]);
      } else {
        error_ = "option " + a + " needs a value";
      }
    } else if (a == "-o" && i + 1 < argc) {
      options_["--output"].push_back(argv[++i]);
    } else if (a == "-i" && i + 1 < argc) {
      options_["--input"].push_back(argv[++i]);
    } else {
      positional_.push_back(a);
    }
  }
}

bool Args::Has(const std::string& name) const { return options_.count(name) != 0; }

std::string Args::Get(const std::string& name, const std::string& def) const {
  auto it = options_.find(name);
  return it == options_.end() ? def : it->second.back();
}

long long Args::GetInt(const std::string& name, long long def) const {
  auto it = options_.find(name);
  return it == options_.end() ? def : std::strtoll(it->second.back().c_str(), nullptr, 0);
}

double Args::GetDouble(const std::string& name, double def) const {
  auto it = options_.find(name);
  return it == options_.end() ? def : std::strtod(it->second.back().c_str(), nullptr);
}

const std::vector<std::string>& Args::All(const std::string& name) const {
  static const std::vector<std::string> none;
  auto it = options_.find(name);
  return it == options_.end() ? none : it->second;
}

std::vector<RegionArg> ParseRegions(const Args& args) {
  std::vector<RegionArg> out;
  for (const std::string& v : args.All("--mem")) {
    size_t eq = v.find('=');
    out.push_back({eq == std::string::npos ? "pc.ram" : v.substr(0, eq),
                   HANDOFF_REGION_MEMORY,
                   eq == std::string::npos ? v : v.substr(eq + 1)});
  }
  int disk = 0;
  for (const std::string& v : args.All("--disk")) {
    size_t eq = v.find('=');
    out.push_back({eq == std::string::npos ? "disk" + std::to_string(disk)
                                           : v.substr(0, eq),
                   HANDOFF_REGION_DISK,
                   eq == std::string::npos ? v : v.substr(eq + 1)});
    disk++;
  }
  return out;
}

Image::~Image() {
  if (data_ != nullptr) munmap(data_, size_);
}

bool Image::OpenRead(const std::string& path, std::string* err) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "cannot open '" + path + "': " + std::strerror(errno);
    return false;
  }
  struct stat st;
  fstat(fd, &st);
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ != 0) {
    void* p = mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      *err = "cannot map '" + path + "': " + std::strerror(errno);
      close(fd);
      return false;
    }
    data_ = static_cast<uint8_t*>(p);
    madvise(data_, size_, MADV_SEQUENTIAL);
  }
  close(fd);
  return true;
}

bool Image::Create(const std::string& path, uint64_t size, std::string* err) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    *err = "cannot create '" + path + "': " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  size_ = size;
  if (size_ != 0) {
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      *err = "cannot map '" + path + "': " + std::strerror(errno);
      close(fd);
      return false;
    }
    data_ = static_cast<uint8_t*>(p);
  }
  close(fd);
  return true;
}

void Image::Sync() {
  if (data_ != nullptr) msync(data_, size_, MS_SYNC);
}

int DrainEncoder(HandoffEncoder* enc, size_t cap,
                 const std::function<void(const uint8_t*, size_t)>& sink,
                 const std::atomic<bool>* stop) {
  std::vector<uint8_t> buf(cap);
  for (;;) {
    if (stop != nullptr && stop->load()) return 0;
    size_t n = 0;
    int rc = handoff_encoder_pull_wait(enc, buf.data(), cap, &n);
    if (rc != 0) return rc;
    if (n == 0 && handoff_encoder_done(enc)) return 0;
    if (n == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    sink(buf.data(), n);
  }
}

double NowSeconds() { return static_cast<double>(NowNs()) * 1e-9; }

uint64_t NowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<uint64_t>(ts.tv_nsec);
}

void Progress::Update(double done, double total, const char* unit) {
  if (!enabled_) return;
  double now = NowSeconds();
  if (now - last_ < 0.5) return;
  last_ = now;
  printed_ = true;
  if (total > 0)
    fprintf(stderr, "\r%s: %.0f / %.0f %s (%.0f%%)   ", what_, done, total,
            unit, 100.0 * done / total);
  else
    fprintf(stderr, "\r%s: %.0f %s   ", what_, done, unit);
  fflush(stderr);
}

void Progress::Done() {
  if (enabled_ && printed_) fprintf(stderr, "\n");
}

std::string JsonString(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      snprintf(b, sizeof(b), "\\u%04x", c);
      o += b;
    } else {
      o += c;
    }
  }
  return o + "\"";
}

void Json::Key(const std::string& key) {
  if (!body_.empty()) body_ += ", ";
  body_ += JsonString(key) + ": ";
}
Json& Json::Add(const std::string& key, const std::string& value) {
  Key(key);
  body_ += JsonString(value);
  return *this;
}
Json& Json::Add(const std::string& key, const char* value) {
  return Add(key, std::string(value));
}
Json& Json::Add(const std::string& key, double value) {
  Key(key);
  char b[64];
  snprintf(b, sizeof(b), "%.6g", value);
  body_ += b;
  return *this;
}
Json& Json::Add(const std::string& key, uint64_t value) {
  Key(key);
  body_ += std::to_string(value);
  return *this;
}
Json& Json::Add(const std::string& key, int value) {
  Key(key);
  body_ += std::to_string(value);
  return *this;
}
Json& Json::AddRaw(const std::string& key, const std::string& json) {
  Key(key);
  body_ += json;
  return *this;
}

std::string ModeString(const HandoffMode& m) {
  char name[64];
  return handoff_mode_name(&m, name, sizeof(name)) < 0 ? "?" : name;
}

int Fail(const char* command, int code) {
  fprintf(stderr, "qemu-handoff %s: %s\n", command,
          *handoff_last_error_message() ? handoff_last_error_message()
                                        : handoff_error_name(code));
  return 1;
}

BaseHandle OpenBase(const std::string& path, const char* command) {
  HandoffBase* base = nullptr;
  int rc = handoff_base_open(path.c_str(), &base);
  if (rc != 0) {
    Fail(command, rc);
    base = nullptr;
  }
  return BaseHandle(base, handoff_base_free);
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  return stat(a.c_str(), &sa) == 0 && stat(b.c_str(), &sb) == 0 &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool CheckNotBaseFile(const HandoffBase* base, const std::string& index_path,
                      const std::string& path, const char* command) {
  struct stat out;
  // Nothing there yet: creating it cannot touch the base.
  if (stat(path.c_str(), &out) != 0) return true;
  auto same = [&path](const std::string& p) { return SameFile(path, p); };
  std::string what;
  if (same(index_path)) what = "the base index";
  char* real = realpath(index_path.c_str(), nullptr);
  if (real != nullptr && what.empty()) {
    std::string dir = real;
    dir.erase(dir.rfind('/') + 1);
    for (size_t r = 0; r < handoff_base_region_count(base) && what.empty(); r++) {
      const char* file = handoff_base_region_file(base, r);
      HandoffRegionInfo info;
      if (file != nullptr && *file != '\0' &&
          handoff_base_region_info(base, r, &info) == 0 && same(dir + file))
        what = std::string("base file '") + file + "' of region '" + info.name + "'";
    }
  }
  free(real);
  if (what.empty()) return true;
  fprintf(stderr, "qemu-handoff %s: refusing to write '%s': it is %s\n",
          command, path.c_str(), what.c_str());
  return false;
}

const RegionArg* FindRegion(const std::vector<RegionArg>& regions,
                            const char* name, const char* command,
                            const char* what) {
  for (const RegionArg& a : regions)
    if (a.name == name) return &a;
  fprintf(stderr, "qemu-handoff %s: no %s given for region '%s'\n", command,
          what, name);
  return nullptr;
}

namespace {

struct CommandHelp {
  const char* name;
  const char* text;
};

// One entry per command: `qemu-handoff CMD --help` prints its own.
constexpr CommandHelp kHelp[] = {
    {"base",
     "  base create --mem [NAME=]PATH... --disk [NAME=]PATH... -o INDEX\n"
     "         (region files inside INDEX's directory; it can then move)\n"
     "  base info INDEX\n"
     "  base verify INDEX   (re-read every base byte, compare with the index)\n"},
    {"encode",
     "  encode --base INDEX --mem [NAME=]PATH... --disk [NAME=]PATH... -o STREAM\n"
     "         [--codec zstd --level 1 --delta none|xor|prefix | --adaptive]\n"
     "         [--threads N] [--frame-kib 256] [--seed S] [--no-random] [--no-dedup]\n"
     "         [--rate-mbit R] [--decision-log FILE] [--max-pending-kib 1024]\n"
     "         [--segmented [--order FILE]]  (stream v3: segments of at most\n"
     "         64 KiB and a table, its SHA-256 printed as the root; FILE lists\n"
     "         'REGION INDEX' per line, chunks whose data goes first)\n"},
    {"decode",
     "  decode --base INDEX -i STREAM --mem [NAME=]PATH... --disk [NAME=]PATH...\n"},
    {"inspect", "  inspect STREAM\n"},
    {"bench",
     "  bench [--size-mib 512] [--threads N] [--modes LIST] [--repeat 3]\n"
     "        [--mode-seconds 20] [--write DIR (only write the images)]\n"},
};

constexpr const char kCommon[] =
    "common: --json (machine-readable result on stdout), --quiet (nothing\n"
    "        but errors and --json output), --help\n";

void PrintHelp(FILE* out, const char* command) {
  fprintf(out, "usage: qemu-handoff %s [options]\n",
          command ? command : "COMMAND");
  for (const CommandHelp& h : kHelp)
    if (command == nullptr || !std::strcmp(command, h.name))
      fputs(h.text, out);
  fputs(kCommon, out);
}

}  // namespace

int Usage(const char* command) {
  PrintHelp(stderr, command);
  return 2;
}

int Help(const char* command) {
  PrintHelp(stdout, command);
  return 0;
}

}  // namespace handoff_cli
