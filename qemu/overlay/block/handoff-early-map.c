/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qemu-handoff: the chunk states of a handoff-early filter (see
 * handoff-early-map.h).
 */
#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "handoff-early-map.h"

void handoff_early_map_init(HandoffEarlyMap *map, uint64_t length)
{
    map->chunks = DIV_ROUND_UP(length, HANDOFF_EARLY_CHUNK);
    map->absent = bitmap_new(map->chunks);
    map->busy = bitmap_new(map->chunks);
    map->absent_count = 0;
}

void handoff_early_map_destroy(HandoffEarlyMap *map)
{
    g_free(map->absent);
    g_free(map->busy);
    map->absent = map->busy = NULL;
    map->chunks = map->absent_count = 0;
}

void handoff_early_map_span(uint64_t offset, uint64_t bytes,
                            uint64_t *first, uint64_t *end)
{
    *first = offset >> HANDOFF_EARLY_CHUNK_BITS;
    *end = DIV_ROUND_UP(offset + bytes, HANDOFF_EARLY_CHUNK);
}

static bool any_set(const unsigned long *map, uint64_t first, uint64_t end)
{
    return first < end && find_next_bit(map, end, first) < end;
}

uint64_t handoff_early_map_mark_absent(HandoffEarlyMap *map, uint64_t first,
                                       uint64_t end)
{
    uint64_t marked = 0;

    for (uint64_t c = first; c < end; c++) {
        if (!test_bit(c, map->absent) && !test_bit(c, map->busy)) {
            set_bit(c, map->absent);
            marked++;
        }
    }
    map->absent_count += marked;
    return marked;
}

bool handoff_early_map_is_absent(const HandoffEarlyMap *map, uint64_t chunk)
{
    return test_bit(chunk, map->absent);
}

bool handoff_early_map_is_busy(const HandoffEarlyMap *map, uint64_t chunk)
{
    return test_bit(chunk, map->busy);
}

void handoff_early_map_forget(HandoffEarlyMap *map, uint64_t chunk)
{
    if (test_bit(chunk, map->absent)) {
        clear_bit(chunk, map->absent);
        map->absent_count--;
    }
}

bool handoff_early_map_any_absent(const HandoffEarlyMap *map, uint64_t first,
                                  uint64_t end)
{
    return any_set(map->absent, first, end);
}

bool handoff_early_map_any_busy(const HandoffEarlyMap *map, uint64_t first,
                                uint64_t end)
{
    return any_set(map->busy, first, end);
}

bool handoff_early_map_write_waits(const HandoffEarlyMap *map,
                                   uint64_t length, uint64_t offset,
                                   uint64_t bytes)
{
    uint64_t first, end, last_end;

    handoff_early_map_span(offset, bytes, &first, &end);
    if (handoff_early_map_any_busy(map, first, end)) {
        return true;
    }
    if (offset % HANDOFF_EARLY_CHUNK && test_bit(first, map->absent)) {
        return true;
    }
    /* Where the last chunk ends: a chunk boundary, or the disk's end. */
    last_end = MIN(end << HANDOFF_EARLY_CHUNK_BITS, length);
    return offset + bytes < last_end && test_bit(end - 1, map->absent);
}

uint64_t handoff_early_map_take_absent(HandoffEarlyMap *map, uint64_t first,
                                       uint64_t end)
{
    uint64_t taken = 0;

    for (uint64_t c = find_next_bit(map->absent, end, first); c < end;
         c = find_next_bit(map->absent, end, c + 1)) {
        clear_bit(c, map->absent);
        set_bit(c, map->busy);
        taken++;
    }
    map->absent_count -= taken;
    return taken;
}

void handoff_early_map_end_busy(HandoffEarlyMap *map, uint64_t first,
                                uint64_t end, bool failed)
{
    for (uint64_t c = find_next_bit(map->busy, end, first); c < end;
         c = find_next_bit(map->busy, end, c + 1)) {
        clear_bit(c, map->busy);
        if (failed) {
            set_bit(c, map->absent);
            map->absent_count++;
        }
    }
}
