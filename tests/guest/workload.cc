// SPDX-License-Identifier: GPL-2.0-or-later
//
// handoff-workload: runs inside the test guest and gives its memory and disk
// the kinds of content handoff must deal with — zero pages, text, random
// bytes, copies of base-disk files (found in the base at other offsets),
// duplicates — and keeps memory resident or dirty while a handoff runs.
// Every fill prints a checksum so tests can tell content survived a move.
//
// Built static: the guest has busybox and nothing else.

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kMiB = 1 << 20;
constexpr size_t kPage = 4096;

// splitmix64: small, seedable, good enough for incompressible test data.
struct Random {
  uint64_t state;
  uint64_t Next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  void Fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i + 8 <= n; i += 8) {
      uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
  }
};

// FNV-1a over 64-bit words: fast, and any changed byte changes it.
uint64_t Checksum(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    h = (h ^ v) * 0x100000001b3ULL;
  }
  return h;
}

struct Args {
  std::vector<std::string> words;
  std::string Get(const char* flag, const char* fallback) const {
    for (size_t i = 0; i + 1 < words.size(); i++)
      if (words[i] == flag) return words[i + 1];
    return fallback;
  }
  bool Has(const char* flag) const {
    for (const auto& w : words)
      if (w == flag) return true;
    return false;
  }
};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "handoff-workload: %s\n", msg.c_str());
  std::exit(1);
}

size_t ParseSize(const std::string& s, const char* what) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0') Die(std::string("bad ") + what + ": " + s);
  return static_cast<size_t>(v);
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("cannot open " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> data;
  uint8_t buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) data.insert(data.end(), buf, buf + n);
  close(fd);
  if (data.empty()) Die(path + " is empty");
  return data;
}

// Text that compresses like logs do: words, numbers, newlines.
void FillText(uint8_t* p, size_t n, Random* rnd) {
  static const char* const words[] = {
      "handoff", "cloudlet", "edge", "frame", "request", "latency", "ok",
      "GET", "/api/v1/detect", "user", "session", "face", "200", "vm"};
  size_t i = 0;
  while (i < n) {
    char line[128];
    int len = std::snprintf(line, sizeof(line), "%llu %s %s %s %llu\n",
                            static_cast<unsigned long long>(rnd->Next() % 100000),
                            words[rnd->Next() % 14], words[rnd->Next() % 14],
                            words[rnd->Next() % 14],
                            static_cast<unsigned long long>(rnd->Next() % 1000));
    for (int k = 0; k < len && i < n; k++) p[i++] = static_cast<uint8_t>(line[k]);
  }
}

uint8_t* Allocate(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) Die("cannot allocate memory");
  mlock(p, bytes);  // best effort: keeps it resident if allowed
  return static_cast<uint8_t*>(p);
}

void Fill(uint8_t* p, size_t bytes, const std::string& pattern, uint64_t seed) {
  Random rnd{seed};
  if (pattern == "zeros") {
    std::memset(p, 0, bytes);
  } else if (pattern == "random") {
    rnd.Fill(p, bytes);
  } else if (pattern == "text") {
    FillText(p, bytes, &rnd);
  } else if (pattern.rfind("file:", 0) == 0) {
    // Copies of a file, each starting on a page, zero-padded as its last
    // block is on disk: every page equals a block of the base disk.
    std::vector<uint8_t> data = ReadFile(pattern.substr(5));
    size_t stride = (data.size() + kPage - 1) / kPage * kPage;
    data.resize(stride, 0);
    for (size_t off = 0; off < bytes; off += stride)
      std::memcpy(p + off, data.data(), std::min(stride, bytes - off));
  } else {
    Die("unknown pattern " + pattern);
  }
}

int Mem(const Args& a) {
  size_t mib = ParseSize(a.Get("--mib", "16"), "--mib");
  std::string pattern = a.Get("--pattern", "random");
  uint64_t seed = ParseSize(a.Get("--seed", "1"), "--seed");
  size_t bytes = mib * kMiB;
  uint8_t* p = Allocate(bytes);
  Fill(p, bytes, pattern, seed);
  std::printf("mem %s %zu MiB checksum=%016llx\n", pattern.c_str(), mib,
              static_cast<unsigned long long>(Checksum(p, bytes)));
  std::fflush(stdout);
  if (a.Has("--hold"))
    for (;;) pause();
  return 0;
}

int Dirty(const Args& a) {
  size_t mib = ParseSize(a.Get("--mib", "32"), "--mib");
  double rate = std::atof(a.Get("--rate-mib-per-s", "4").c_str());
  size_t seconds = ParseSize(a.Get("--seconds", "0"), "--seconds");
  if (rate <= 0) Die("--rate-mib-per-s must be positive");
  size_t bytes = mib * kMiB;
  uint8_t* p = Allocate(bytes);
  Random rnd{42};
  rnd.Fill(p, bytes);
  std::printf("dirty %zu MiB at %.1f MiB/s\n", mib, rate);
  std::fflush(stdout);
  const size_t pages = bytes / kPage;
  const auto start = std::chrono::steady_clock::now();
  const size_t pages_per_tick = std::max<size_t>(1, rate * kMiB / kPage / 10);
  for (size_t tick = 0;; tick++) {
    for (size_t i = 0; i < pages_per_tick; i++) {
      uint8_t* page = p + (rnd.Next() % pages) * kPage;
      uint64_t v = rnd.Next();
      std::memcpy(page + (v % (kPage / 8)) * 8, &v, 8);
    }
    auto next = start + std::chrono::milliseconds(100 * (tick + 1));
    std::this_thread::sleep_until(next);
    if (seconds && tick + 1 >= seconds * 10) break;
  }
  return 0;
}

// A simulation's inner loop: every word of the buffer rewritten, pass
// after pass, as fast as the CPU goes.
int Sweep(const Args& a) {
  size_t mib = ParseSize(a.Get("--mib", "8"), "--mib");
  size_t bytes = mib * kMiB;
  uint64_t* p = reinterpret_cast<uint64_t*>(Allocate(bytes));
  std::printf("sweep %zu MiB\n", mib);
  std::fflush(stdout);
  for (uint64_t pass = 1;; pass++) {
    for (size_t i = 0; i < bytes / 8; i++) p[i] = p[i] * 6364136223846793005ULL + pass;
  }
}

// Memory that keeps changing hands: buffers allocated (fresh pages from
// the kernel's free lists, often pages the guest agent just reported
// free), filled, verified and freed, round after round, while handoffs
// run. A write lost by a move shows as a buffer whose checksum no longer
// matches. SIGUSR1 verifies every live buffer and prints the totals.
volatile sig_atomic_t churn_report = 0;

struct ChurnSlot {
  uint8_t* p = nullptr;
  uint64_t sum = 0;
};

bool ChurnVerify(const ChurnSlot& s, size_t bytes) {
  return !s.p || Checksum(s.p, bytes) == s.sum;
}

int Churn(const Args& a) {
  const size_t slots = ParseSize(a.Get("--slots", "64"), "--slots");
  const size_t bytes = ParseSize(a.Get("--kib", "256"), "--kib") * 1024;
  const size_t pause_ms = ParseSize(a.Get("--pause-ms", "2"), "--pause-ms");
  std::vector<ChurnSlot> slot(slots);
  Random rnd{99};
  uint64_t verified = 0, lost = 0, cycles = 0;
  signal(SIGUSR1, [](int) { churn_report = 1; });
  std::printf("churn %zu slots of %zu KiB\n", slots, bytes / 1024);
  std::fflush(stdout);
  for (;;) {
    ChurnSlot& s = slot[rnd.Next() % slots];
    if (s.p) {
      verified++;
      if (!ChurnVerify(s, bytes)) {
        lost++;
        std::printf("churn: LOST a write in a buffer at %p\n", s.p);
      }
      munmap(s.p, bytes);
    }
    s.p = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (s.p == MAP_FAILED) Die("cannot allocate memory");
    rnd.Fill(s.p, bytes);
    s.sum = Checksum(s.p, bytes);
    cycles++;
    if (churn_report) {
      churn_report = 0;
      for (const ChurnSlot& t : slot) {
        if (!t.p) continue;
        verified++;
        if (!ChurnVerify(t, bytes)) lost++;
      }
      std::printf("churn: %llu cycles, %llu verified, %llu lost\n",
                  static_cast<unsigned long long>(cycles),
                  static_cast<unsigned long long>(verified),
                  static_cast<unsigned long long>(lost));
    }
    std::fflush(stdout);
    if (pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
}

void WriteFile(const std::string& path, const uint8_t* p, size_t n) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) Die("cannot create " + path + ": " + std::strerror(errno));
  for (size_t off = 0; off < n;) {
    ssize_t w = write(fd, p + off, n - off);
    if (w <= 0) Die("cannot write " + path + ": " + std::strerror(errno));
    off += static_cast<size_t>(w);
  }
  if (fsync(fd) < 0) Die("cannot fsync " + path);
  close(fd);
}

// New, duplicate, zero and base-copied files, a quarter each.
int Files(const Args& a) {
  std::string dir = a.Get("--dir", "/mnt/work");
  size_t mib = ParseSize(a.Get("--mib", "16"), "--mib");
  std::string copy_from = a.Get("--copy-from", "");
  mkdir(dir.c_str(), 0755);
  size_t quarter = std::max<size_t>(1, mib / 4) * kMiB;
  std::vector<uint8_t> buf(quarter);
  Random rnd{7};

  rnd.Fill(buf.data(), quarter / 2);
  WriteFile(dir + "/new.bin", buf.data(), quarter / 2);
  WriteFile(dir + "/new-copy.bin", buf.data(), quarter / 2);  // duplicate
  FillText(buf.data(), quarter, &rnd);
  WriteFile(dir + "/log.txt", buf.data(), quarter);
  std::memset(buf.data(), 0, quarter);
  WriteFile(dir + "/zeros.bin", buf.data(), quarter);
  size_t copied = 0;
  if (!copy_from.empty()) {
    // A base file again, shifted by one block: found in the base elsewhere.
    std::vector<uint8_t> data = ReadFile(copy_from);
    std::vector<uint8_t> shifted(kPage + data.size(), 0xab);
    std::memcpy(shifted.data() + kPage, data.data(), data.size());
    WriteFile(dir + "/base-copy.bin", shifted.data(), shifted.size());
    copied = shifted.size();
  }
  std::printf("files %s: %zu KiB new+dup, %zu KiB text, %zu KiB zeros, %zu KiB base copy\n",
              dir.c_str(), quarter / 1024, quarter / 1024, quarter / 1024,
              copied / 1024);
  std::fflush(stdout);
  return 0;
}

void Usage() {
  std::puts(
      "usage: handoff-workload COMMAND [options]\n"
      "  mem   --mib N --pattern zeros|text|random|file:PATH [--seed S] [--hold]\n"
      "        fill N MiB of memory, print its checksum, optionally stay resident\n"
      "  dirty --mib N --rate-mib-per-s R [--seconds S]\n"
      "        keep rewriting pages of an N MiB buffer at about R MiB/s\n"
      "  sweep --mib N\n"
      "        rewrite every word of an N MiB buffer, pass after pass\n"
      "  churn [--slots N] [--kib K] [--pause-ms MS]\n"
      "        allocate, fill, verify and free K KiB buffers in N slots, on and\n"
      "        on; SIGUSR1 verifies all and prints cycles, verified, lost\n"
      "  files --dir DIR --mib N [--copy-from FILE]\n"
      "        write new, duplicate, text, zero and base-copied files, fsynced");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help")) {
    Usage();
    return argc < 2 ? 2 : 0;
  }
  Args a;
  for (int i = 2; i < argc; i++) a.words.emplace_back(argv[i]);
  std::string cmd = argv[1];
  if (cmd == "mem") return Mem(a);
  if (cmd == "dirty") return Dirty(a);
  if (cmd == "sweep") return Sweep(a);
  if (cmd == "files") return Files(a);
  if (cmd == "churn") return Churn(a);
  Usage();
  return 2;
}
