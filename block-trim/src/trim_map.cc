// SPDX-License-Identifier: GPL-2.0-or-later
//
// The extern "C" boundary: argument checks, clamping to the disk, the
// mutex. Nothing below throws (the extent set reports allocation failure
// by forgetting), and the one call here that may, taking the mutex, is
// caught: no exception reaches QEMU's C frames or coroutine stacks.
#include "trim_map.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>

#include "chunk_runs.h"
#include "extent_set.h"

struct TrimMap {
  TrimMap(uint64_t disk, size_t max_extents) noexcept
      : disk_bytes(disk), set(max_extents) {}

  const uint64_t disk_bytes;
  std::mutex mu;
  handoff::trim::ExtentSet set;  // guarded by mu
  uint64_t discards = 0;         // guarded by mu
  uint64_t discard_bytes = 0;    // guarded by mu
  // A write could not take the mutex, so the extents may hold a range
  // written since its discard: the next holder of the mutex forgets all.
  std::atomic<bool> stale{false};
};

namespace handoff::trim {
namespace {

// The mutex, held, with a stale map already forgotten; nullopt when it
// could not be taken (std::mutex::lock may throw std::system_error).
// Queries take a const map: forgetting stale extents changes no answer
// they could give, since stale extents must never be reported anyway.
std::optional<std::unique_lock<std::mutex>> Lock(const TrimMap* cmap) noexcept {
  auto* map = const_cast<TrimMap*>(cmap);
  try {
    std::unique_lock<std::mutex> lock(map->mu);
    if (map->stale.exchange(false)) map->set.DropAll();
    return lock;
  } catch (...) {
    return std::nullopt;
  }
}

// [offset, offset + bytes) within the disk as [*start, *end); false when
// that is empty. Written so that offset + bytes cannot wrap.
bool Clamp(const TrimMap* map, uint64_t offset, uint64_t bytes,
           uint64_t* start, uint64_t* end) noexcept {
  if (bytes == 0 || offset >= map->disk_bytes) return false;
  *start = offset;
  *end = offset + std::min(bytes, map->disk_bytes - offset);
  return true;
}

}  // namespace
}  // namespace handoff::trim

using handoff::trim::Clamp;
using handoff::trim::Lock;

extern "C" {

int trim_map_new(uint64_t disk_bytes, size_t max_extents,
                 TrimMap** out) noexcept {
  if (!out) return -EINVAL;
  *out = nullptr;
  if (max_extents == 0) max_extents = TRIM_MAP_DEFAULT_MAX_EXTENTS;
  auto* map = new (std::nothrow) TrimMap(disk_bytes, max_extents);
  if (!map) return -ENOMEM;
  *out = map;
  return 0;
}

void trim_map_free(TrimMap* map) noexcept { delete map; }

void trim_map_discard(TrimMap* map, uint64_t offset, uint64_t bytes) noexcept {
  uint64_t start, end;
  if (!map || !Clamp(map, offset, bytes, &start, &end)) return;
  auto lock = Lock(map);
  if (!lock) return;  // the discard is lost, which is safe
  map->discards++;
  map->discard_bytes += end - start;
  map->set.Add(start, end);
}

void trim_map_write(TrimMap* map, uint64_t offset, uint64_t bytes) noexcept {
  uint64_t start, end;
  if (!map || !Clamp(map, offset, bytes, &start, &end)) return;
  auto lock = Lock(map);
  if (!lock) {
    map->stale.store(true);
    return;
  }
  map->set.Remove(start, end);
}

int trim_map_next_run(const TrimMap* map, uint64_t from_chunk,
                      uint32_t chunk_size, uint64_t* first,
                      uint64_t* count) noexcept {
  if (!map || !first || !count || chunk_size == 0) return -EINVAL;
  auto lock = Lock(map);
  if (!lock) return 0;  // knowing nothing is the safe answer
  handoff::trim::ChunkRun run;
  if (!NextWholeChunkRun(map->set, from_chunk, chunk_size, &run)) return 0;
  *first = run.first;
  *count = run.count;
  return 1;
}

void trim_map_clear(TrimMap* map) noexcept {
  if (!map) return;
  auto lock = Lock(map);
  if (!lock) {
    map->stale.store(true);  // forgetting later is the next best thing
    return;
  }
  map->set.Clear();
}

int trim_map_stats(const TrimMap* map, TrimMapStats* stats) noexcept {
  if (!map || !stats || stats->struct_size < TRIM_MAP_STATS_SIZE_V1) {
    return -EINVAL;
  }
  TrimMapStats s;
  std::memset(&s, 0, sizeof(s));
  {
    auto lock = Lock(map);
    if (!lock) return -EAGAIN;
    s.discards = map->discards;
    s.discard_bytes = map->discard_bytes;
    s.covered_bytes = map->set.covered_bytes();
    s.extents = map->set.size();
    s.max_extents = map->set.max_extents();
    s.dropped_extents = map->set.dropped_extents();
    s.dropped_bytes = map->set.dropped_bytes();
  }
  uint32_t caller_size = stats->struct_size;
  size_t filled = std::min<size_t>(caller_size, sizeof(s));
  s.struct_size = caller_size;
  std::memcpy(stats, &s, filled);
  if (caller_size > filled) {
    std::memset(reinterpret_cast<char*>(stats) + filled, 0,
                caller_size - filled);
  }
  return 0;
}

}  // extern "C"

// The first layout ends with dropped_bytes; later fields go after it.
static_assert(offsetof(TrimMapStats, dropped_bytes) + sizeof(uint64_t) ==
                  TRIM_MAP_STATS_SIZE_V1,
              "TRIM_MAP_STATS_SIZE_V1 is the published first layout");
