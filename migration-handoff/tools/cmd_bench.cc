// SPDX-License-Identifier: GPL-2.0-or-later
//
// qemu-handoff bench: generates a base and a modified image with a
// realistic mix of chunk kinds, then measures the index (hash + lookup),
// raw zstd-1 on the same bytes, every requested mode on one worker, and
// the fastest mode on more workers. It prints figures; it asserts nothing.
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "base.h"
#include "chunk.h"
#include "cli.h"

namespace handoff_cli {
namespace {

constexpr size_t kChunk = HANDOFF_CHUNK_SIZE;

struct Rng {
  uint64_t s;
  uint64_t Next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// Text-like content: words from a small vocabulary, as in page cache and
// heap strings; compresses about 3-4x with zstd-1.
void FillText(uint8_t* p, uint64_t tag) {
  static const char* const words[] = {
      "the ", "guest ", "kernel ", "page ", "cache ", "holds ", "file ",
      "data ", "while ", "handoff ", "moves ", "state ", "between ", "edge ",
      "servers ", "\n", "0x7fff", "struct ", "return ", "{ ", "} ", "if ",
      "int ", "char ", "NULL", "; ", "= ", "for ", "user ", "session ",
      "request ", "GET /index.html HTTP/1.1\r\n"};
  Rng r{tag * 0x9E3779B97F4A7C15ull + 1};
  size_t pos = static_cast<size_t>(snprintf(reinterpret_cast<char*>(p), 32,
                                            "%llx:", (unsigned long long)tag));
  while (pos < kChunk) {
    const char* w = words[r.Next() % 32];
    size_t n = std::min(std::strlen(w), kChunk - pos);
    std::memcpy(p + pos, w, n);
    pos += n;
  }
}

void FillRandom(uint8_t* p, uint64_t tag) {
  Rng r{tag * 0xD1B54A32D192ED03ull + 7};
  for (size_t i = 0; i < kChunk; i += 8) {
    uint64_t v = r.Next();
    std::memcpy(p + i, &v, 8);
  }
}

// Binary-ish structured content: small integers and pointers.
void FillStruct(uint8_t* p, uint64_t tag) {
  Rng r{tag + 12345};
  for (size_t i = 0; i < kChunk; i += 8) {
    uint64_t v = (r.Next() % 8 == 0) ? 0xffff888000000000ull + (r.Next() & 0xfffff0)
                                     : r.Next() % 256;
    std::memcpy(p + i, &v, 8);
  }
}

void MakeBase(uint8_t* mem, uint64_t chunks, uint64_t seed) {
  for (uint64_t i = 0; i < chunks; i++) {
    uint8_t* c = mem + i * kChunk;
    uint64_t k = (i * 2654435761u + seed) % 100;
    if (k < 15) {
      std::memset(c, 0, kChunk);
    } else if (k < 70) {
      FillText(c, seed * 1000003 + i);
    } else if (k < 85) {
      FillStruct(c, seed * 1000003 + i);
    } else {
      FillRandom(c, seed * 1000003 + i);
    }
  }
}

struct Mix {
  uint64_t zero = 0, same = 0, base_copy = 0, dup = 0, text = 0, edit = 0,
           random = 0;
};

// Modified memory: 10% zeroed, 35% unchanged, 8% copies of other base
// chunks, 5% duplicates of new chunks, 22% new text, 12% small edits of
// the base chunk, 8% new random (incompressible).
Mix MakeModified(const uint8_t* base, uint8_t* mod, uint64_t chunks) {
  Mix mix;
  std::memcpy(mod, base, chunks * kChunk);
  Rng r{42};
  uint64_t last_new = 0;
  for (uint64_t i = 0; i < chunks; i++) {
    uint8_t* c = mod + i * kChunk;
    uint64_t k = r.Next() % 100;
    if (k < 10) {
      std::memset(c, 0, kChunk);
      mix.zero++;
    } else if (k < 45) {
      mix.same++;
    } else if (k < 53) {
      std::memcpy(c, base + (r.Next() % chunks) * kChunk, kChunk);
      mix.base_copy++;
    } else if (k < 58 && last_new != 0) {
      std::memcpy(c, mod + last_new * kChunk, kChunk);
      mix.dup++;
    } else if (k < 80) {
      FillText(c, 777777777 + i);
      last_new = i;
      mix.text++;
    } else if (k < 92) {
      for (int e = 0; e < 4; e++) {
        size_t off = r.Next() % (kChunk - 8);
        uint64_t v = r.Next();
        std::memcpy(c + off, &v, 8);
      }
      mix.edit++;
    } else {
      FillRandom(c, 999999999 + i);
      last_new = i;
      mix.random++;
    }
  }
  return mix;
}

// The generated images: a base, and the modified state encoded against it.
struct BenchImages {
  uint64_t mem_chunks = 0, disk_chunks = 0;
  std::vector<uint8_t> base_mem, base_disk, mod_mem, mod_disk;
  Mix mix;
};

// What the command line asks for.
struct BenchOptions {
  uint64_t size = 0;  // memory bytes
  unsigned max_threads = 1;
  double mode_seconds = 0;
  int repeat = 1;
  bool json = false;
  bool quiet = false;
  std::string write_dir;
  // --modes, each resolved by the engine's compression policy as named.
  std::vector<HandoffEncoderConfig> modes;
  FILE* info = stdout;  // the human-readable report
};

// *config for mode @name, run as named. False, with the engine's last
// error message set, when the engine refuses it.
bool NamedMode(const std::string& name, HandoffEncoderConfig* config) {
  *config = HandoffEncoderConfig{};
  config->struct_size = sizeof(*config);
  return handoff_encoder_config_default(config) == 0 &&
         handoff_encoder_config_set_compression(config, name.c_str(),
                                                HANDOFF_DELTAS_AS_NAMED) == 0;
}

// The configurations of the modes in @list (comma-separated names); the
// ones the engine refuses are skipped with its reason, as is "auto": a
// bench measures modes, not the controller.
std::vector<HandoffEncoderConfig> ParseModeList(const std::string& list) {
  std::vector<HandoffEncoderConfig> modes;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    HandoffEncoderConfig config;
    if (!NamedMode(item, &config))
      fprintf(stderr, "bench: skipping mode '%s': %s\n", item.c_str(),
              handoff_last_error_message());
    else if (config.adaptive)
      fprintf(stderr, "bench: skipping mode '%s': not a fixed mode\n",
              item.c_str());
    else
      modes.push_back(config);
  }
  return modes;
}

// False after printing why (usage error).
bool ParseOptions(const Args& args, BenchOptions* o) {
  o->size = static_cast<uint64_t>(args.GetInt("--size-mib", 512)) << 20;
  o->max_threads = static_cast<unsigned>(
      args.GetInt("--threads", std::clamp(std::thread::hardware_concurrency(), 1u,
                                          unsigned{HANDOFF_MAX_THREADS})));
  if (o->max_threads == 0 || o->max_threads > HANDOFF_MAX_THREADS) {
    fprintf(stderr, "qemu-handoff bench: --threads must be within 1..%d\n",
            HANDOFF_MAX_THREADS);
    return false;
  }
  o->mode_seconds = args.GetDouble("--mode-seconds", 20);
  o->json = args.Has("--json");
  o->quiet = args.Has("--quiet");
  o->modes = ParseModeList(args.Get(
      "--modes",
      "none,zstd-1,zstd-1+xor,zstd-1+prefix,zstd-3,zstd-9,zlib-1,zlib-6,lzma-0,lzma-6"));
  o->info = o->json ? stderr : stdout;
  o->write_dir = args.Get("--write");
  // The machine is shared and noisy: every timing is the best of
  // --repeat runs (slow modes run once).
  o->repeat = static_cast<int>(std::max(1LL, args.GetInt("--repeat", 3)));
  return true;
}

void MakeImages(const BenchOptions& o, BenchImages* im) {
  im->mem_chunks = o.size / kChunk;
  im->disk_chunks = std::max<uint64_t>(1, im->mem_chunks / 8);
  if (!o.quiet)
    fprintf(stderr, "bench: generating %llu MiB memory + %llu MiB disk...\n",
            (unsigned long long)(o.size >> 20),
            (unsigned long long)(im->disk_chunks * kChunk >> 20));
  im->base_mem.resize(im->mem_chunks * kChunk);
  im->base_disk.resize(im->disk_chunks * kChunk);
  im->mod_mem.resize(im->mem_chunks * kChunk);
  im->mod_disk.resize(im->disk_chunks * kChunk);
  MakeBase(im->base_mem.data(), im->mem_chunks, 1);
  MakeBase(im->base_disk.data(), im->disk_chunks, 2);
  im->mix = MakeModified(im->base_mem.data(), im->mod_mem.data(), im->mem_chunks);
  std::memcpy(im->mod_disk.data(), im->base_disk.data(), im->mod_disk.size());
  for (uint64_t i = 0; i < im->disk_chunks; i += 3)
    FillText(&im->mod_disk[i * kChunk], 5555555 + i);
}

// Only writes the generated images, for trying the other commands: the
// exit status.
int WriteImages(const BenchImages& im, const std::string& dir) {
  struct {
    const char* name;
    const std::vector<uint8_t>* data;
  } files[] = {{"base-mem.img", &im.base_mem},
               {"base-disk.img", &im.base_disk},
               {"mem.img", &im.mod_mem},
               {"disk.img", &im.mod_disk}};
  for (const auto& f : files) {
    std::string path = dir + "/" + f.name;
    FILE* out = fopen(path.c_str(), "wb");
    if (out == nullptr || fwrite(f.data->data(), 1, f.data->size(), out) !=
                              f.data->size()) {
      perror(path.c_str());
      return 1;
    }
    fclose(out);
  }
  fprintf(stderr, "bench: images written to %s\n", dir.c_str());
  return 0;
}

HandoffEncoderStats EmptyStats() {
  HandoffEncoderStats s{};
  s.struct_size = sizeof(s);
  return s;
}

struct RunResult {
  double seconds = 0;
  uint64_t input = 0, output = 0;
  HandoffEncoderStats stats = EmptyStats();
  std::vector<uint8_t> stream;
};

// Submits memory in random order within each batch, then the disk in
// order, until @max_seconds have passed since @t0; counts the input.
bool SubmitImages(HandoffEncoder* enc, const BenchImages& im, double t0,
                  double max_seconds, RunResult* out) {
  const uint64_t batch = 8192;
  std::vector<uint64_t> idx(batch);
  bool ok = true;
  for (int region = 0; region < 2 && ok; region++) {
    uint64_t chunks = region == 0 ? im.mem_chunks : im.disk_chunks;
    const uint8_t* data = region == 0 ? im.mod_mem.data() : im.mod_disk.data();
    for (uint64_t b = 0; b < chunks && ok; b += batch) {
      uint64_t n = std::min(batch, chunks - b);
      for (uint64_t i = 0; i < n; i++) idx[i] = b + i;
      ok = handoff_encoder_submit_many(enc, region, data, idx.data(), n,
                                       region == 0) == 0;
      out->input += n * kChunk;
      if (NowSeconds() - t0 > max_seconds) break;
    }
  }
  return ok;
}

// One encoding of the modified images in @mode on @threads workers; the
// stream is kept when @keep.
bool RunEncoder(HandoffBase* base, const HandoffEncoderConfig& mode,
                unsigned threads, const BenchImages& im, double max_seconds,
                bool keep, RunResult* out) {
  HandoffEncoderConfig cfg = mode;
  cfg.threads = threads;
  HandoffEncoder* enc = nullptr;
  if (handoff_encoder_create(base, &cfg, &enc) != 0) return false;
  std::atomic<bool> failed{false};
  auto pull = [&] {
    int rc = DrainEncoder(enc, 1 << 20, [&](const uint8_t* data, size_t n) {
      out->output += n;
      if (keep) out->stream.insert(out->stream.end(), data, data + n);
    });
    if (rc != 0) failed = true;
  };
  std::thread puller;
  try {
    puller = std::thread(pull);
  } catch (const std::system_error& e) {
    fprintf(stderr, "qemu-handoff bench: cannot start puller thread: %s\n",
            e.what());
    handoff_encoder_free(enc);
    return false;
  }
  double t0 = NowSeconds();
  bool ok = SubmitImages(enc, im, t0, max_seconds, out);
  ok = ok && handoff_encoder_finish(enc) == 0;
  puller.join();
  out->seconds = NowSeconds() - t0;
  handoff_encoder_stats(enc, &out->stats);
  handoff_encoder_free(enc);
  return ok && !failed;
}

// Raw zstd-1 on @threads threads, each on its share of @data: what this
// machine's cores and memory allow without the engine. Negative when a
// thread could not start.
double RawZstd1Threads(const uint8_t* data, size_t len, unsigned threads) {
  std::vector<std::thread> pool;
  pool.reserve(threads);
  double t0 = NowSeconds();
  for (unsigned t = 0; t < threads; t++) {
    auto work = [=] {
      size_t begin = len * t / threads / 262144 * 262144;
      size_t end = t + 1 == threads ? len : len * (t + 1) / threads / 262144 * 262144;
      ZSTD_CCtx* c = ZSTD_createCCtx();
      std::vector<uint8_t> out(ZSTD_compressBound(262144));
      for (size_t off = begin; off < end; off += 262144)
        ZSTD_compressCCtx(c, out.data(), out.size(), data + off,
                          std::min<size_t>(262144, end - off), 1);
      ZSTD_freeCCtx(c);
    };
    try {
      pool.emplace_back(work);
    } catch (const std::system_error& e) {
      fprintf(stderr, "qemu-handoff bench: cannot start thread: %s\n", e.what());
      for (auto& th : pool) th.join();
      return -1;
    }
  }
  for (auto& t : pool) t.join();
  return NowSeconds() - t0;
}

double RawZstd1(const uint8_t* data, size_t len, size_t* out_len) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  std::vector<uint8_t> out(ZSTD_compressBound(256 * 1024));
  double t0 = NowSeconds();
  *out_len = 0;
  for (size_t off = 0; off < len; off += 256 * 1024) {
    size_t n = std::min<size_t>(256 * 1024, len - off);
    *out_len += ZSTD_compressCCtx(c, out.data(), out.size(), data + off, n, 1);
  }
  double dt = NowSeconds() - t0;
  ZSTD_freeCCtx(c);
  return dt;
}

// Every figure of the report, in the order measured.
struct Figures {
  double index_s = 0, lookup_s = 0, hash_s = 0;
  uint64_t hits = 0;
  double raw_s = 1e30, raw_data_s = 1e30;
  size_t raw_out = 0, raw_data_out = 0;
  std::vector<uint8_t> data_only;     // the chunks that travel as data
  std::vector<double> raw_threads_s;  // by thread count - 1
  std::string modes_json = "[", scaling_json = "[";
};

// The base through the C API, its index build timed: null after failing.
BaseHandle CreateBase(const BenchImages& im, Figures* f) {
  HandoffRegionSpec specs[2] = {
      {"pc.ram", HANDOFF_REGION_MEMORY, nullptr, im.base_mem.data(), im.base_mem.size()},
      {"disk0", HANDOFF_REGION_DISK, nullptr, im.base_disk.data(), im.base_disk.size()}};
  double t0 = NowSeconds();
  HandoffBase* base = nullptr;
  if (handoff_base_create(specs, 2, nullptr, &base) != 0) {
    Fail("bench", -1);
    base = nullptr;
  }
  f->index_s = NowSeconds() - t0;
  return BaseHandle(base, handoff_base_free);
}

// The engine's own base over the same images, for timing its parts.
std::unique_ptr<handoff::Base> EngineBase(const BenchImages& im) {
  std::unique_ptr<handoff::Base> ib;
  std::vector<handoff::RegionSource> src = {
      {{"pc.ram", HANDOFF_REGION_MEMORY, im.base_mem.size()}, "", im.base_mem.data()},
      {{"disk0", HANDOFF_REGION_DISK, im.base_disk.size()}, "", im.base_disk.data()}};
  handoff::Status st = handoff::Base::Create(src, "", &ib);
  if (!st.ok()) ib.reset();
  return ib;
}

// Hash + lookup on one core, over the modified memory image; then the
// hash alone.
void MeasureLookup(const BenchImages& im, const handoff::Base& ib, Figures* f) {
  double t0 = NowSeconds();
  for (uint64_t i = 0; i < im.mem_chunks; i++) {
    const uint8_t* c = &im.mod_mem[i * kChunk];
    uint64_t g;
    f->hits += ib.Find(handoff::HashChunk(c), c, &g);
  }
  f->lookup_s = NowSeconds() - t0;
  t0 = NowSeconds();
  uint64_t sink = 0;
  for (uint64_t i = 0; i < im.mem_chunks; i++)
    sink += handoff::HashChunk(&im.mod_mem[i * kChunk]).lo;
  f->hash_s = NowSeconds() - t0;
  (void)sink;
}

// The chunks that must travel as data (text, edits, random; no zero, base
// or duplicate chunk): the bytes the engine's compressor actually sees,
// in image order.
void FindDataChunks(const BenchImages& im, const handoff::Base& ib, Figures* f) {
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (uint64_t i = 0; i < im.mem_chunks; i++) {
    const uint8_t* c = &im.mod_mem[i * kChunk];
    const uint8_t* b = &im.base_mem[i * kChunk];
    uint64_t g;
    handoff::Hash128 h = handoff::HashChunk(c);
    if (handoff::IsZeroChunk(c) || std::memcmp(c, b, kChunk) == 0 ||
        ib.Find(h, c, &g) || !seen.insert({h.lo, h.hi}).second)
      continue;
    f->data_only.insert(f->data_only.end(), c, c + kChunk);
  }
}

// Raw zstd-1 on the whole memory image.
void MeasureRawImage(const BenchImages& im, const BenchOptions& o, Figures* f) {
  for (int k = 0; k < o.repeat; k++)
    f->raw_s = std::min(f->raw_s, RawZstd1(im.mod_mem.data(), im.mod_mem.size(),
                                           &f->raw_out));
}

// Raw zstd-1 on the data chunks, then on 1..max_threads threads. False
// when a thread could not start.
bool MeasureRawData(const BenchOptions& o, Figures* f) {
  for (int k = 0; k < o.repeat; k++)
    f->raw_data_s = std::min(f->raw_data_s, RawZstd1(f->data_only.data(),
                                                     f->data_only.size(),
                                                     &f->raw_data_out));
  for (unsigned t = 1; t <= o.max_threads; t++) {
    double best = 1e30;
    for (int k = 0; k < o.repeat; k++) {
      const double s = RawZstd1Threads(f->data_only.data(), f->data_only.size(), t);
      if (s < 0) return false;
      best = std::min(best, s);
    }
    f->raw_threads_s.push_back(best);
  }
  return true;
}

void PrintBaseline(const BenchOptions& o, const BenchImages& im,
                   const Figures& f) {
  const Mix& mix = im.mix;
  const double mem_mb = static_cast<double>(im.mod_mem.size()) / 1e6;
  const double base_bytes = static_cast<double>(im.base_mem.size() + im.base_disk.size());
  const double data_mb = f.data_only.size() / 1e6;
  fprintf(o.info, "image      memory %llu MiB: zero %llu, same %llu, base copies %llu, "
          "duplicates %llu, text %llu, edits %llu, random %llu chunks; disk %llu MiB\n",
          (unsigned long long)(o.size >> 20), (unsigned long long)mix.zero,
          (unsigned long long)mix.same, (unsigned long long)mix.base_copy,
          (unsigned long long)mix.dup, (unsigned long long)mix.text,
          (unsigned long long)mix.edit, (unsigned long long)mix.random,
          (unsigned long long)(im.disk_chunks * kChunk >> 20));
  fprintf(o.info, "index      build %.3f s = %.2f GB/s (all cores, in memory)\n",
          f.index_s, base_bytes / f.index_s / 1e9);
  fprintf(o.info, "lookup     hash+index %.2f GB/s per core (%llu hits); hash alone %.2f GB/s\n",
          mem_mb / f.lookup_s / 1e3, (unsigned long long)f.hits, mem_mb / f.hash_s / 1e3);
  fprintf(o.info, "raw zstd-1 %.1f MB/s on the memory image (ratio %.3f); "
          "%.1f MB/s on its %.0f MB of data chunks (ratio %.3f)\n",
          mem_mb / f.raw_s, static_cast<double>(f.raw_out) / im.mod_mem.size(),
          data_mb / f.raw_data_s, data_mb,
          static_cast<double>(f.raw_data_out) / f.data_only.size());
  for (unsigned t = 1; t <= o.max_threads; t++)
    fprintf(o.info, "raw zstd-1 on %u thread(s): %.1f MB/s of data chunks (%.2fx one)\n",
            t, data_mb / f.raw_threads_s[t - 1],
            f.raw_threads_s[0] / f.raw_threads_s[t - 1]);
}

// One row of the modes table (one worker), in text and in JSON: the
// mode's input speed.
double ReportMode(const BenchOptions& o, const HandoffMode& m,
                  const RunResult& r, Figures* f) {
  double speed = r.input / r.seconds / 1e6;
  double data_bytes = static_cast<double>(r.stats.chunks[HANDOFF_REC_DATA]) * kChunk;
  double ratio = static_cast<double>(r.output) / r.input;
  // Data bytes per CPU second of the worker: per-worker speed free of
  // the producer thread and of scheduling.
  double per_cpu = r.stats.worker_cpu_seconds > 0
                       ? data_bytes / 1e6 / r.stats.worker_cpu_seconds
                       : 0;
  fprintf(o.info, "%-16s %8.0f %9.1f %10.1f %14.1f %8.4f %8.2f\n",
          ModeString(m).c_str(), r.input / 1e6, speed,
          data_bytes / 1e6 / r.seconds, per_cpu, ratio, r.seconds);
  Json j;
  j.Add("mode", ModeString(m)).Add("input_bytes", r.input)
      .Add("output_bytes", r.output).Add("seconds", r.seconds)
      .Add("input_MBps_per_worker", speed)
      .Add("data_MBps_per_worker", data_bytes / 1e6 / r.seconds)
      .Add("data_MB_per_worker_cpu_second", per_cpu)
      .Add("ratio", ratio);
  f->modes_json += (f->modes_json.size() > 1 ? ", " : "") + j.str();
  return speed;
}

// Every requested mode on one worker, best of --repeat by time per input
// byte; *fastest becomes the fastest that compresses. False when an
// encoding failed.
bool MeasureModes(HandoffBase* base, const BenchImages& im,
                  const BenchOptions& o, Figures* f,
                  HandoffEncoderConfig* fastest) {
  double best_speed = 0;
  fprintf(o.info, "%-16s %8s %9s %10s %14s %8s %8s\n", "mode (1 worker)", "input MB",
          "MB/s", "data MB/s", "data MB/cpu-s", "ratio", "seconds");
  for (const HandoffEncoderConfig& mode : o.modes) {
    RunResult r;
    for (int k = 0; k < o.repeat; k++) {
      RunResult attempt;
      if (!RunEncoder(base, mode, 1, im, o.mode_seconds, false, &attempt))
        return false;
      if (k == 0 || attempt.seconds / attempt.input < r.seconds / r.input)
        r = std::move(attempt);
      if (r.seconds > 3) break;
    }
    double speed = ReportMode(o, mode.mode, r, f);
    if (mode.mode.codec != HANDOFF_CODEC_NONE && speed > best_speed) {
      best_speed = speed;
      *fastest = mode;
    }
  }
  f->modes_json += "]";
  return true;
}

// Decodes @r's stream over a copy of the base and compares it with the
// modified images: 0, or the exit status after printing the mismatch.
int CheckDecode(HandoffBase* base, const BenchImages& im,
                const BenchOptions& o, const HandoffMode& mode,
                const RunResult& r) {
  std::vector<uint8_t> out_mem(im.base_mem), out_disk(im.base_disk);
  void* mem[2] = {out_mem.data(), out_disk.data()};
  HandoffDecoder* dec = nullptr;
  double d0 = NowSeconds();
  int rc = handoff_decoder_create(base, nullptr, mem, &dec);
  if (rc == 0) rc = handoff_decoder_feed(dec, r.stream.data(), r.stream.size());
  if (rc == 0) rc = handoff_decoder_finish(dec);
  double ds = NowSeconds() - d0;
  handoff_decoder_free(dec);
  bool same = rc == 0 && out_mem == im.mod_mem && out_disk == im.mod_disk;
  fprintf(o.info, "decode     %s: %.2f s, %.1f MB/s of image, round trip %s\n",
          ModeString(mode).c_str(), ds, r.input / ds / 1e6,
          same ? "exact" : "MISMATCH");
  if (!same) return Fail("bench", rc ? rc : HANDOFF_E_INTERNAL);
  return 0;
}

// Scaling of @fastest over 1..max_threads workers, and a decode check of
// its one-worker stream: 0 or the exit status.
int MeasureScaling(HandoffBase* base, const BenchImages& im,
                   const BenchOptions& o, const HandoffEncoderConfig& fastest,
                   Figures* f) {
  double one = 0;
  for (unsigned t = 1; t <= o.max_threads; t++) {
    RunResult r;
    bool keep = t == 1;
    for (int k = 0; k < o.repeat; k++) {
      RunResult attempt;
      if (!RunEncoder(base, fastest, t, im, 1e9, keep && k == 0, &attempt))
        return Fail("bench", HANDOFF_E_INTERNAL);
      if (k == 0) {
        r = std::move(attempt);
      } else if (attempt.seconds < r.seconds) {
        attempt.stream = std::move(r.stream);
        r = std::move(attempt);
      }
    }
    double speed = r.input / r.seconds / 1e6;
    if (t == 1) one = speed;
    fprintf(o.info, "workers %u  %s %.1f MB/s input (%.2fx one worker)\n", t,
            ModeString(fastest.mode).c_str(), speed, speed / one);
    Json j;
    j.Add("workers", static_cast<uint64_t>(t)).Add("input_MBps", speed)
        .Add("speedup", speed / one);
    f->scaling_json += (t > 1 ? ", " : "") + j.str();
    if (keep) {
      if (int status = CheckDecode(base, im, o, fastest.mode, r)) return status;
    }
  }
  f->scaling_json += "]";
  return 0;
}

void PrintJson(const BenchImages& im, const Figures& f) {
  const double mem_mb = static_cast<double>(im.mod_mem.size()) / 1e6;
  const double base_bytes = static_cast<double>(im.base_mem.size() + im.base_disk.size());
  Json j;
  j.Add("memory_bytes", static_cast<uint64_t>(im.mod_mem.size()))
      .Add("disk_bytes", static_cast<uint64_t>(im.mod_disk.size()))
      .Add("index_GBps", base_bytes / f.index_s / 1e9)
      .Add("lookup_GBps_per_core", mem_mb / f.lookup_s / 1e3)
      .Add("hash_GBps_per_core", mem_mb / f.hash_s / 1e3)
      .Add("raw_zstd1_MBps", mem_mb / f.raw_s)
      .Add("raw_zstd1_data_MBps", f.data_only.size() / 1e6 / f.raw_data_s)
      .AddRaw("modes", f.modes_json)
      .AddRaw("scaling", f.scaling_json);
  printf("%s\n", j.str().c_str());
}

}  // namespace

int CmdBench(const Args& args) {
  BenchOptions o;
  if (!ParseOptions(args, &o)) return 2;
  BenchImages im;
  MakeImages(o, &im);
  if (!o.write_dir.empty()) return WriteImages(im, o.write_dir);

  Figures f;
  BaseHandle base = CreateBase(im, &f);
  if (base == nullptr) return 1;
  std::unique_ptr<handoff::Base> ib = EngineBase(im);
  if (ib == nullptr) return 1;
  MeasureLookup(im, *ib, &f);
  MeasureRawImage(im, o, &f);
  FindDataChunks(im, *ib, &f);
  if (!MeasureRawData(o, &f)) return 1;
  PrintBaseline(o, im, f);
  // Scaled when no requested mode compresses: raw zstd-1's engine twin.
  HandoffEncoderConfig fastest;
  if (!NamedMode("zstd-1", &fastest) ||
      !MeasureModes(base.get(), im, o, &f, &fastest))
    return Fail("bench", HANDOFF_E_INTERNAL);
  if (int status = MeasureScaling(base.get(), im, o, fastest, &f)) return status;
  if (o.json) PrintJson(im, f);
  return 0;
}

}  // namespace handoff_cli
