/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * trim_map — which bytes of one disk the guest has discarded (IDE TRIM,
 * virtio-blk discard, SCSI UNMAP) and not written since, behind a plain C
 * API.
 *
 * Why: a guest that frees blocks (fstrim, `discard` mounts) leaves them
 * dirty in the handoff's disk bitmap, and without this map the sender
 * would read and ship their stale contents. With it, the sender learns
 * which dirty chunks were discarded and can send a zero extent instead.
 *
 * The map is a hint, never the truth. Forgetting a discarded range is
 * always safe: the sender then reads the chunk and sends it as it would
 * have without the map. Reporting a range that was not discarded would
 * not be safe, so the map never does:
 * - it reports only what trim_map_discard() recorded and no later
 *   trim_map_write() removed;
 * - when it must shed memory (the bound below, an allocation failure) it
 *   forgets ranges, it never widens them;
 * - chunk queries report only chunks that lie wholly inside one discarded
 *   range: a discard smaller than a qcow2 cluster leaves the cluster's
 *   old data in place.
 * Even so, the sender confirms with the block layer (bdrv_block_status()
 * reporting zero) before it sends a zero extent: a write the map was not
 * told of, or a discard and a write in flight at the same time, which may
 * reach the map and the disk in different orders, leave a range reported
 * that holds data.
 *
 * Thread-safety: every function may be called from any thread on the same
 * map at the same time (QEMU records from iothreads while the migration
 * thread queries); each call takes the map's mutex for O(log n) work plus
 * the extents it merges, splits or skips. Only trim_map_free() must not
 * race with other calls on the same map.
 *
 * Bounds: a map holds at most max_extents disjoint extents (ranges that
 * touch or overlap are merged). When a discard or a write that splits an
 * extent would exceed the bound, the map drops its SMALLEST extents, which
 * are worth the least to the sender, and counts them in TrimMapStats.
 * Memory is O(max_extents) (about 128 bytes per extent on 64-bit glibc),
 * never O(requests).
 *
 * Errors: functions that can fail return 0 or a negative errno value
 * (-EINVAL for bad arguments, -ENOMEM). Recording functions return
 * nothing: if they cannot record a discard, or cannot take the mutex, the
 * map forgets what it must to stay sound, which costs only bandwidth.
 * No function throws; the C++ side is noexcept.
 */
#ifndef TRIM_MAP_H
#define TRIM_MAP_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* C++ callers and the library itself see the no-throw guarantee. */
#define TRIM_MAP_NOEXCEPT noexcept
extern "C" {
#else
#define TRIM_MAP_NOEXCEPT
#endif

/* Bound used when trim_map_new() is given max_extents 0 (~8 MiB). */
#define TRIM_MAP_DEFAULT_MAX_EXTENTS 65536

typedef struct TrimMap TrimMap;

/*
 * Creates an empty map of a disk of @disk_bytes bytes, holding at most
 * @max_extents extents (0: TRIM_MAP_DEFAULT_MAX_EXTENTS). The disk size is
 * fixed for the map's life: on a resize, free the map and create another
 * (forgetting is safe). Returns 0 and sets *@out, or -EINVAL (@out NULL)
 * or -ENOMEM.
 */
int trim_map_new(uint64_t disk_bytes, size_t max_extents,
                 TrimMap **out) TRIM_MAP_NOEXCEPT;

/* Frees @map (NULL is a no-op). No other call may be in progress on it. */
void trim_map_free(TrimMap *map) TRIM_MAP_NOEXCEPT;

/*
 * Records that the guest discarded [@offset, @offset + @bytes), clamped to
 * the disk; an empty or wholly out-of-disk range is ignored. Byte
 * granular: alignment to chunks happens when the map is queried.
 */
void trim_map_discard(TrimMap *map, uint64_t offset,
                      uint64_t bytes) TRIM_MAP_NOEXCEPT;

/*
 * Records that [@offset, @offset + @bytes) was written, or may have been:
 * the range is no longer "discarded and not written since" and is never
 * reported again unless discarded again. Clamped like trim_map_discard().
 * Callers that see guest writes (write-zeroes included) record them here
 * to keep the map exact; the sender also calls it for a range the map
 * reported but the block layer found not to read as zero, so that the map
 * stops naming it.
 */
void trim_map_write(TrimMap *map, uint64_t offset,
                    uint64_t bytes) TRIM_MAP_NOEXCEPT;

/*
 * Finds the first run of whole chunks of @chunk_size bytes (chunk n is
 * [n * chunk_size, (n + 1) * chunk_size)) at or after chunk @from_chunk
 * that lie wholly inside discarded extents. Chunks only partly discarded
 * are never reported, nor is a last chunk that extends beyond the end of
 * the disk. Runs are maximal: the chunk after a run is not discarded.
 *
 * Returns 1 and sets *@first and *@count (>= 1) when a run exists, 0 when
 * none does (or the map could not be consulted: knowing nothing is the
 * safe answer), -EINVAL when @map, @first or @count is NULL or
 * @chunk_size is 0. To walk the map, call again with
 * from_chunk = *first + *count. Each call sees the map at one instant;
 * successive calls may see records made in between.
 */
int trim_map_next_run(const TrimMap *map, uint64_t from_chunk,
                      uint32_t chunk_size, uint64_t *first,
                      uint64_t *count) TRIM_MAP_NOEXCEPT;

/* Forgets every extent (e.g. when a new handoff starts from a new base). */
void trim_map_clear(TrimMap *map) TRIM_MAP_NOEXCEPT;

/*
 * Counters of a map. Set struct_size to sizeof(TrimMapStats) before the
 * call. The library fills the first min(struct_size, its own sizeof)
 * bytes and zeroes the rest of a larger caller struct, so a caller built
 * against a newer header reads 0 from fields this library does not know
 * (0 means "nothing" for every counter). Fields are only ever appended.
 */
typedef struct TrimMapStats {
    uint32_t struct_size;     /* set by the caller; left unchanged */
    uint32_t reserved;        /* 0 */
    uint64_t discards;        /* trim_map_discard() calls not ignored */
    uint64_t discard_bytes;   /* sum of their clamped lengths */
    uint64_t covered_bytes;   /* bytes in the map's extents now */
    uint64_t extents;         /* extents now */
    uint64_t max_extents;     /* the bound in force */
    uint64_t dropped_extents; /* extents forgotten for the bound or memory */
    uint64_t dropped_bytes;   /* their bytes when forgotten */
} TrimMapStats;

/* Size of TrimMapStats as first published; struct_size may not be less. */
#define TRIM_MAP_STATS_SIZE_V1 64

/*
 * Fills *@stats as described above, all counters read at one instant.
 * Returns 0; -EINVAL when @map or @stats is NULL or stats->struct_size <
 * TRIM_MAP_STATS_SIZE_V1; -EAGAIN when the map's mutex could not be taken
 * (pthread_mutex_lock failed; not expected). Nothing is written on error.
 */
int trim_map_stats(const TrimMap *map, TrimMapStats *stats) TRIM_MAP_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* TRIM_MAP_H */
