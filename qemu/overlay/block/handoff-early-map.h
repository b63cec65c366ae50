/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qemu-handoff: the chunk states of a handoff-early filter.
 *
 * Every 4 KiB chunk of the filtered disk is in one of three states:
 * present (the overlay holds what the guest may see), absent (the
 * overlay carries the chunk but it has not been received: the child
 * still reads the base there), or busy (being written: by a placement,
 * or by a guest write that makes an absent chunk present).  Two bitmaps
 * hold them; both are sized once, from the disk's length at open, so
 * nothing the guest does grows them.
 *
 * Plain data: the filter (block/handoff-early.c) serialises every call
 * with its lock.
 */
#ifndef BLOCK_HANDOFF_EARLY_MAP_H
#define BLOCK_HANDOFF_EARLY_MAP_H

#include "block/handoff-early.h"        /* HANDOFF_EARLY_CHUNK */

typedef struct HandoffEarlyMap {
    uint64_t chunks;
    unsigned long *absent;
    unsigned long *busy;
    uint64_t absent_count;
} HandoffEarlyMap;

/* A disk of @length bytes, every chunk present. */
void handoff_early_map_init(HandoffEarlyMap *map, uint64_t length);
void handoff_early_map_destroy(HandoffEarlyMap *map);

/* The chunks [*first, *end) that bytes [@offset, +@bytes) touch. */
void handoff_early_map_span(uint64_t offset, uint64_t bytes,
                            uint64_t *first, uint64_t *end);

/* Chunks [@first, @end) that are absent now become so; returns how many. */
uint64_t handoff_early_map_mark_absent(HandoffEarlyMap *map, uint64_t first,
                                       uint64_t end);

bool handoff_early_map_is_absent(const HandoffEarlyMap *map, uint64_t chunk);
bool handoff_early_map_is_busy(const HandoffEarlyMap *map, uint64_t chunk);

/* An absent chunk is present from now on, without being written. */
void handoff_early_map_forget(HandoffEarlyMap *map, uint64_t chunk);

/* Whether any chunk of [@first, @end) is absent or busy. */
bool handoff_early_map_any_absent(const HandoffEarlyMap *map, uint64_t first,
                                  uint64_t end);
bool handoff_early_map_any_busy(const HandoffEarlyMap *map, uint64_t first,
                                uint64_t end);

/*
 * A write of [@offset, +@bytes) on a disk of @length bytes: whether it
 * must wait, i.e. a chunk it touches is busy, or one it covers only in
 * part is absent (its other bytes would be the base's).  A chunk cut by
 * the end of the disk counts as covered up to there.
 */
bool handoff_early_map_write_waits(const HandoffEarlyMap *map,
                                   uint64_t length, uint64_t offset,
                                   uint64_t bytes);

/*
 * Chunks of [@first, @end) that are absent become busy and no longer
 * absent; returns how many.  The caller ends it with _end_busy().
 */
uint64_t handoff_early_map_take_absent(HandoffEarlyMap *map, uint64_t first,
                                       uint64_t end);

/*
 * The busy chunks of [@first, @end) are done: present, or absent again
 * if @failed (a guest write that failed leaves the stream's bytes due).
 */
void handoff_early_map_end_busy(HandoffEarlyMap *map, uint64_t first,
                                uint64_t end, bool failed);

#endif
