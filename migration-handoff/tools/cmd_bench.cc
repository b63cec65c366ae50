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

bool RunEncoder(HandoffBase* base, const HandoffMode& mode, unsigned threads,
                const uint8_t* mem, const uint8_t* disk, uint64_t mem_chunks,
                uint64_t disk_chunks, double max_seconds, bool keep,
                RunResult* out) {
  HandoffEncoderConfig cfg{};
  cfg.struct_size = sizeof(cfg);
  handoff_encoder_config_default(&cfg);
  cfg.adaptive = 0;
  cfg.mode = mode;
  cfg.threads = threads;
  HandoffEncoder* enc = nullptr;
  if (handoff_encoder_create(base, &cfg, &enc) != 0) return false;
  std::atomic<bool> failed{false};
  auto pull = [&] {
    std::vector<uint8_t> buf(1 << 20);
    for (;;) {
      size_t n = 0;
      if (handoff_encoder_pull_wait(enc, buf.data(), buf.size(), &n) != 0) {
        failed = true;
        return;
      }
      if (n == 0 && handoff_encoder_done(enc)) return;
      if (n == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      out->output += n;
      if (keep) out->stream.insert(out->stream.end(), buf.begin(), buf.begin() + n);
    }
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
  const uint64_t batch = 8192;
  std::vector<uint64_t> idx(batch);
  bool ok = true;
  // Memory in random order within each batch, then the disk in order.
  for (int region = 0; region < 2 && ok; region++) {
    uint64_t chunks = region == 0 ? mem_chunks : disk_chunks;
    const uint8_t* data = region == 0 ? mem : disk;
    for (uint64_t b = 0; b < chunks && ok; b += batch) {
      uint64_t n = std::min(batch, chunks - b);
      for (uint64_t i = 0; i < n; i++) idx[i] = b + i;
      ok = handoff_encoder_submit_many(enc, region, data, idx.data(), n,
                                       region == 0) == 0;
      out->input += n * kChunk;
      if (NowSeconds() - t0 > max_seconds) break;
    }
  }
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

std::vector<HandoffMode> ParseModeList(const std::string& list) {
  std::vector<HandoffMode> modes;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    HandoffMode m;
    if (handoff_mode_parse(item.c_str(), &m) == 0) modes.push_back(m);
    else fprintf(stderr, "bench: skipping mode '%s': %s\n", item.c_str(),
                 handoff_last_error_message());
  }
  return modes;
}

}  // namespace

int CmdBench(const Args& args) {
  const uint64_t size = static_cast<uint64_t>(args.GetInt("--size-mib", 512)) << 20;
  const uint64_t mem_chunks = size / kChunk;
  const uint64_t disk_chunks = std::max<uint64_t>(1, mem_chunks / 8);
  const unsigned max_threads = static_cast<unsigned>(
      args.GetInt("--threads", std::clamp(std::thread::hardware_concurrency(), 1u,
                                          unsigned{HANDOFF_MAX_THREADS})));
  if (max_threads == 0 || max_threads > HANDOFF_MAX_THREADS) {
    fprintf(stderr, "qemu-handoff bench: --threads must be within 1..%d\n",
            HANDOFF_MAX_THREADS);
    return 2;
  }
  const double mode_seconds = args.GetDouble("--mode-seconds", 20);
  const bool json = args.Has("--json");
  std::vector<HandoffMode> modes = ParseModeList(args.Get(
      "--modes",
      "none,zstd-1,zstd-1+xor,zstd-1+prefix,zstd-3,zstd-9,zlib-1,zlib-6,lzma-0,lzma-6"));
  FILE* info = json ? stderr : stdout;

  if (!args.Has("--quiet"))
    fprintf(stderr, "bench: generating %llu MiB memory + %llu MiB disk...\n",
            (unsigned long long)(size >> 20),
            (unsigned long long)(disk_chunks * kChunk >> 20));
  std::vector<uint8_t> base_mem(mem_chunks * kChunk), base_disk(disk_chunks * kChunk);
  std::vector<uint8_t> mod_mem(mem_chunks * kChunk), mod_disk(disk_chunks * kChunk);
  MakeBase(base_mem.data(), mem_chunks, 1);
  MakeBase(base_disk.data(), disk_chunks, 2);
  Mix mix = MakeModified(base_mem.data(), mod_mem.data(), mem_chunks);
  std::memcpy(mod_disk.data(), base_disk.data(), mod_disk.size());
  for (uint64_t i = 0; i < disk_chunks; i += 3) FillText(&mod_disk[i * kChunk], 5555555 + i);

  const std::string write_dir = args.Get("--write");
  if (!write_dir.empty()) {
    // Only write the generated images, for trying the other commands.
    struct {
      const char* name;
      const std::vector<uint8_t>* data;
    } files[] = {{"base-mem.img", &base_mem},
                 {"base-disk.img", &base_disk},
                 {"mem.img", &mod_mem},
                 {"disk.img", &mod_disk}};
    for (const auto& f : files) {
      std::string path = write_dir + "/" + f.name;
      FILE* out = fopen(path.c_str(), "wb");
      if (out == nullptr || fwrite(f.data->data(), 1, f.data->size(), out) !=
                                f.data->size()) {
        perror(path.c_str());
        return 1;
      }
      fclose(out);
    }
    fprintf(stderr, "bench: images written to %s\n", write_dir.c_str());
    return 0;
  }

  // Index build, through the C API.
  HandoffRegionSpec specs[2] = {
      {"pc.ram", HANDOFF_REGION_MEMORY, nullptr, base_mem.data(), base_mem.size()},
      {"disk0", HANDOFF_REGION_DISK, nullptr, base_disk.data(), base_disk.size()}};
  double t0 = NowSeconds();
  HandoffBase* base = nullptr;
  if (handoff_base_create(specs, 2, nullptr, &base) != 0) return Fail("bench", -1);
  double index_s = NowSeconds() - t0;
  std::unique_ptr<HandoffBase, void (*)(HandoffBase*)> guard(base, handoff_base_free);
  const double base_bytes = static_cast<double>(base_mem.size() + base_disk.size());

  // Hash + lookup on one core, over the modified memory image.
  std::unique_ptr<handoff::Base> ib;
  std::vector<handoff::RegionSource> src = {
      {{"pc.ram", HANDOFF_REGION_MEMORY, base_mem.size()}, "", base_mem.data()},
      {{"disk0", HANDOFF_REGION_DISK, base_disk.size()}, "", base_disk.data()}};
  handoff::Status st = handoff::Base::Create(src, "", &ib);
  if (!st.ok()) return 1;
  t0 = NowSeconds();
  uint64_t hits = 0;
  for (uint64_t i = 0; i < mem_chunks; i++) {
    const uint8_t* c = &mod_mem[i * kChunk];
    uint64_t g;
    hits += ib->Find(handoff::HashChunk(c), c, &g);
  }
  double lookup_s = NowSeconds() - t0;
  t0 = NowSeconds();
  uint64_t sink = 0;
  for (uint64_t i = 0; i < mem_chunks; i++) sink += handoff::HashChunk(&mod_mem[i * kChunk]).lo;
  double hash_s = NowSeconds() - t0;

  size_t raw_out = 0, raw_data_out = 0;
  // The machine is shared and noisy: every timing below is the best of
  // --repeat runs (slow modes run once).
  const int repeat = static_cast<int>(std::max(1LL, args.GetInt("--repeat", 3)));
  double raw_s = 1e30;
  for (int k = 0; k < repeat; k++)
    raw_s = std::min(raw_s, RawZstd1(mod_mem.data(), mod_mem.size(), &raw_out));
  // Raw zstd-1 on only the chunks that must travel as data (text, edits,
  // random; no zero, base or duplicate chunk): the bytes the engine's
  // compressor actually sees, in image order.
  std::vector<uint8_t> data_only;
  {
    std::set<std::pair<uint64_t, uint64_t>> seen;
    for (uint64_t i = 0; i < mem_chunks; i++) {
      const uint8_t* c = &mod_mem[i * kChunk];
      const uint8_t* b = &base_mem[i * kChunk];
      uint64_t g;
      handoff::Hash128 h = handoff::HashChunk(c);
      if (handoff::IsZeroChunk(c) || std::memcmp(c, b, kChunk) == 0 ||
          ib->Find(h, c, &g) || !seen.insert({h.lo, h.hi}).second)
        continue;
      data_only.insert(data_only.end(), c, c + kChunk);
    }
  }
  double raw_data_s = 1e30;
  for (int k = 0; k < repeat; k++)
    raw_data_s = std::min(raw_data_s,
                          RawZstd1(data_only.data(), data_only.size(), &raw_data_out));
  const double mem_mb = static_cast<double>(mod_mem.size()) / 1e6;
  std::vector<double> raw_threads_s;
  for (unsigned t = 1; t <= max_threads; t++) {
    double best = 1e30;
    for (int k = 0; k < repeat; k++) {
      const double s = RawZstd1Threads(data_only.data(), data_only.size(), t);
      if (s < 0) return 1;
      best = std::min(best, s);
    }
    raw_threads_s.push_back(best);
  }

  fprintf(info, "image      memory %llu MiB: zero %llu, same %llu, base copies %llu, "
          "duplicates %llu, text %llu, edits %llu, random %llu chunks; disk %llu MiB\n",
          (unsigned long long)(size >> 20), (unsigned long long)mix.zero,
          (unsigned long long)mix.same, (unsigned long long)mix.base_copy,
          (unsigned long long)mix.dup, (unsigned long long)mix.text,
          (unsigned long long)mix.edit, (unsigned long long)mix.random,
          (unsigned long long)(disk_chunks * kChunk >> 20));
  fprintf(info, "index      build %.3f s = %.2f GB/s (all cores, in memory)\n",
          index_s, base_bytes / index_s / 1e9);
  fprintf(info, "lookup     hash+index %.2f GB/s per core (%llu hits); hash alone %.2f GB/s\n",
          mem_mb / lookup_s / 1e3, (unsigned long long)hits, mem_mb / hash_s / 1e3);
  fprintf(info, "raw zstd-1 %.1f MB/s on the memory image (ratio %.3f); "
          "%.1f MB/s on its %.0f MB of data chunks (ratio %.3f)\n",
          mem_mb / raw_s, static_cast<double>(raw_out) / mod_mem.size(),
          data_only.size() / 1e6 / raw_data_s, data_only.size() / 1e6,
          static_cast<double>(raw_data_out) / data_only.size());

  for (unsigned t = 1; t <= max_threads; t++)
    fprintf(info, "raw zstd-1 on %u thread(s): %.1f MB/s of data chunks (%.2fx one)\n",
            t, data_only.size() / 1e6 / raw_threads_s[t - 1],
            raw_threads_s[0] / raw_threads_s[t - 1]);

  std::string modes_json = "[";
  double best_speed = 0;
  HandoffMode fastest = {HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_NONE};
  fprintf(info, "%-16s %8s %9s %10s %14s %8s %8s\n", "mode (1 worker)", "input MB",
          "MB/s", "data MB/s", "data MB/cpu-s", "ratio", "seconds");
  for (const HandoffMode& m : modes) {
    RunResult r;
    for (int k = 0; k < repeat; k++) {
      RunResult attempt;
      if (!RunEncoder(base, m, 1, mod_mem.data(), mod_disk.data(), mem_chunks,
                      disk_chunks, mode_seconds, false, &attempt))
        return Fail("bench", HANDOFF_E_INTERNAL);
      if (k == 0 || attempt.seconds / attempt.input < r.seconds / r.input)
        r = std::move(attempt);
      if (r.seconds > 3) break;
    }
    double speed = r.input / r.seconds / 1e6;
    double data_bytes = static_cast<double>(r.stats.chunks[HANDOFF_REC_DATA]) * kChunk;
    double ratio = static_cast<double>(r.output) / r.input;
    // Data bytes per CPU second of the worker: per-worker speed free of
    // the producer thread and of scheduling.
    double per_cpu = r.stats.worker_cpu_seconds > 0
                         ? data_bytes / 1e6 / r.stats.worker_cpu_seconds
                         : 0;
    fprintf(info, "%-16s %8.0f %9.1f %10.1f %14.1f %8.4f %8.2f\n",
            ModeString(m).c_str(), r.input / 1e6, speed,
            data_bytes / 1e6 / r.seconds, per_cpu, ratio, r.seconds);
    if (m.codec != HANDOFF_CODEC_NONE && speed > best_speed) {
      best_speed = speed;
      fastest = m;
    }
    Json j;
    j.Add("mode", ModeString(m)).Add("input_bytes", r.input)
        .Add("output_bytes", r.output).Add("seconds", r.seconds)
        .Add("input_MBps_per_worker", speed)
        .Add("data_MBps_per_worker", data_bytes / 1e6 / r.seconds)
        .Add("data_MB_per_worker_cpu_second", per_cpu)
        .Add("ratio", ratio);
    modes_json += (modes_json.size() > 1 ? ", " : "") + j.str();
  }
  modes_json += "]";

  // Scaling of the fastest compressing mode, and a decode check.
  std::string scaling_json = "[";
  double one = 0;
  for (unsigned t = 1; t <= max_threads; t++) {
    RunResult r;
    bool keep = t == 1;
    for (int k = 0; k < repeat; k++) {
      RunResult attempt;
      if (!RunEncoder(base, fastest, t, mod_mem.data(), mod_disk.data(),
                      mem_chunks, disk_chunks, 1e9, keep && k == 0, &attempt))
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
    fprintf(info, "workers %u  %s %.1f MB/s input (%.2fx one worker)\n", t,
            ModeString(fastest).c_str(), speed, speed / one);
    Json j;
    j.Add("workers", static_cast<uint64_t>(t)).Add("input_MBps", speed)
        .Add("speedup", speed / one);
    scaling_json += (t > 1 ? ", " : "") + j.str();
    if (keep) {
      std::vector<uint8_t> out_mem(base_mem), out_disk(base_disk);
      void* mem[2] = {out_mem.data(), out_disk.data()};
      HandoffDecoder* dec = nullptr;
      double d0 = NowSeconds();
      int rc = handoff_decoder_create(base, nullptr, mem, &dec);
      if (rc == 0) rc = handoff_decoder_feed(dec, r.stream.data(), r.stream.size());
      if (rc == 0) rc = handoff_decoder_finish(dec);
      double ds = NowSeconds() - d0;
      handoff_decoder_free(dec);
      bool same = rc == 0 && out_mem == mod_mem && out_disk == mod_disk;
      fprintf(info, "decode     %s: %.2f s, %.1f MB/s of image, round trip %s\n",
              ModeString(fastest).c_str(), ds, r.input / ds / 1e6,
              same ? "exact" : "MISMATCH");
      if (!same) return Fail("bench", rc ? rc : HANDOFF_E_INTERNAL);
    }
  }
  scaling_json += "]";
  if (json) {
    Json j;
    j.Add("memory_bytes", static_cast<uint64_t>(mod_mem.size()))
        .Add("disk_bytes", static_cast<uint64_t>(mod_disk.size()))
        .Add("index_GBps", base_bytes / index_s / 1e9)
        .Add("lookup_GBps_per_core", mem_mb / lookup_s / 1e3)
        .Add("hash_GBps_per_core", mem_mb / hash_s / 1e3)
        .Add("raw_zstd1_MBps", mem_mb / raw_s)
        .Add("raw_zstd1_data_MBps", data_only.size() / 1e6 / raw_data_s)
        .AddRaw("modes", modes_json)
        .AddRaw("scaling", scaling_json);
    printf("%s\n", j.str().c_str());
  }
  (void)sink;
  return 0;
}

}  // namespace handoff_cli
