/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qemu-handoff: the handoff-early block filter (block/handoff-early.c),
 * as the rest of QEMU feeds it.
 *
 * Early start resumes a VM before its disk overlay has arrived.  The
 * filter sits on the VM's overlay node and holds back every request that
 * would see the base's bytes where the overlay carries others, until the
 * carried bytes are placed.
 *
 * Every function here runs in the main thread under the BQL (the node
 * cannot go away meanwhile) or, for handoff_early_place(), in any thread
 * that holds a reference to the node.
 */
#ifndef BLOCK_HANDOFF_EARLY_H
#define BLOCK_HANDOFF_EARLY_H

#include "block/block.h"

/* The filter's unit: the engine's chunk (handoff-record-disk.c checks). */
#define HANDOFF_EARLY_CHUNK_BITS 12
#define HANDOFF_EARLY_CHUNK (1ULL << HANDOFF_EARLY_CHUNK_BITS)

typedef struct HandoffEarlyStats {
    uint64_t chunks;        /* 4 KiB chunks of the disk */
    uint64_t absent;        /* carried, not yet placed or written */
    uint64_t waits;         /* requests that waited for a chunk */
    uint64_t writes;        /* placement requests sent to the child */
    uint64_t placed;        /* chunks placed */
    uint64_t dropped;       /* placements dropped: chunk already present */
    uint64_t superseded;    /* absent chunks a guest write made present */
    uint64_t touched;       /* log-only: carried chunks first touched */
    uint64_t queued_bytes;  /* placements waiting, as charged to the bound */
} HandoffEarlyStats;

/* The filter's state of @bs, or NULL with @errp set if @bs is not one. */
typedef struct BDRVHandoffEarlyState BDRVHandoffEarlyState;
BDRVHandoffEarlyState *handoff_early_of(BlockDriverState *bs, Error **errp);

/*
 * Marks chunks [@first, +@count) carried but not received: requests that
 * would see them wait until they are placed.  For the setup, before the
 * guest runs.  Chunks being written stay as they are.
 */
bool handoff_early_mark_absent(BDRVHandoffEarlyState *s, uint64_t first,
                               uint64_t count, Error **errp);

/*
 * Queues the placement of chunks [@first, +@count): @data (@count * 4 KiB
 * bytes, taken over by the filter, g_free'd) or zeros if @data is NULL.
 * Chunks already present by then are skipped.  Fails without queueing
 * (and frees @data) beyond the bound on queued bytes.
 */
bool handoff_early_place(BDRVHandoffEarlyState *s, uint64_t first,
                         uint64_t count, uint8_t *data, Error **errp);

/*
 * @n placements, queued whole or not at all: on success the filter owns
 * every @data; on failure the caller still does.
 */
typedef struct HandoffEarlyChunks {
    uint64_t first, count;
    uint8_t *data;          /* count * 4 KiB bytes, or NULL for zeros */
} HandoffEarlyChunks;

bool handoff_early_place_many(BDRVHandoffEarlyState *s,
                              const HandoffEarlyChunks *chunks, size_t n,
                              Error **errp);

void handoff_early_stats(BDRVHandoffEarlyState *s, HandoffEarlyStats *stats);

/* The error of a placement that failed (-errno; every request gets it), or 0. */
int handoff_early_error(BDRVHandoffEarlyState *s);

/*
 * Puts a handoff-early filter named @node_name over @bs (its parents then
 * see the filter), or drops one again: main thread, BQL held.
 */
BlockDriverState *handoff_early_insert(BlockDriverState *bs,
                                       const char *node_name, bool log_only,
                                       Error **errp);
void handoff_early_remove(BlockDriverState *filter);

/*
 * Early start's demand fetch: @fn is called with each absent chunk a
 * request is about to wait for, from the request's thread with the
 * filter's lock held, so it must only note the chunk and return (a chunk
 * may be named again by later requests).  Set before the guest runs.
 */
typedef void HandoffEarlyDemandFn(uint64_t chunk, void *opaque);
void handoff_early_set_demand(BDRVHandoffEarlyState *s,
                              HandoffEarlyDemandFn *fn, void *opaque);

/*
 * Log-only mode: calls @fn for each chunk marked absent that has been
 * touched, in the order of first touch, with its time (QEMU_CLOCK_REALTIME,
 * ns).  The log holds each such chunk once, so it is bounded by what was
 * marked, never by the guest's requests.
 */
void handoff_early_log_foreach(BDRVHandoffEarlyState *s,
                               void (*fn)(uint64_t chunk, int64_t ns,
                                          void *opaque),
                               void *opaque);

#endif
