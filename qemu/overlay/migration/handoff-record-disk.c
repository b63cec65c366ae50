/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The disk half of working-set recording (handoff-record.c has memory):
 * a handoff-early filter in log-only mode (block/handoff-early.c) is put
 * over the base disk's overlay while recording, with every chunk marked,
 * so the first read or write of each 4 KiB chunk is logged with its time.
 * The guest sees no difference: log-only never holds a request back.
 *
 * Main thread, BQL held, like any graph change. Synthesized VMs have no
 * iothreads (the allowlist has none), but the disk's AioContext is taken
 * around the change as block jobs do, so one would not break it.
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "block/block_int-global-state.h"
#include "block/handoff-early.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "sysemu/block-backend.h"
#include "handoff-internal.h"
#include "handoff-record.h"

#define RECORD_NODE_NAME "handoff-record-disk"

struct HandoffRecordDisk {
    BlockDriverState *filter;
    BDRVHandoffEarlyState *early;
    uint32_t region;
};

/* The filter logs chunks in the engine's numbering. */
QEMU_BUILD_BUG_ON(HANDOFF_EARLY_CHUNK != HANDOFF_CHUNK_SIZE);

HandoffRecordDisk *handoff_record_disk_start(HandoffBaseStore *store,
                                             Error **errp)
{
    HandoffRecordDisk *d;
    BlockBackend *blk = handoff_base_find_disk(store, errp);
    BlockDriverState *filter;

    if (!blk) {
        return NULL;
    }
    filter = handoff_early_insert(blk_bs(blk), RECORD_NODE_NAME, true, errp);
    if (!filter) {
        error_prepend(errp, "cannot log the disk's first touches: ");
        return NULL;
    }
    d = g_new0(HandoffRecordDisk, 1);
    d->filter = filter;
    d->region = store->disk_region;
    d->early = handoff_early_of(filter, &error_abort);
    if (!handoff_early_mark_absent(d->early, 0,
                                   DIV_ROUND_UP(store->disk_size,
                                                HANDOFF_CHUNK_SIZE), errp)) {
        handoff_record_disk_stop(d, 0, NULL);
        return NULL;
    }
    return d;
}

typedef struct DiskLogSink {
    GArray *entries;            /* HandoffRecordEntry */
    uint32_t region;
    int64_t t0;
} DiskLogSink;

static void add_touch(uint64_t chunk, int64_t ns, void *opaque)
{
    DiskLogSink *sink = opaque;
    HandoffRecordEntry e = {
        .region = sink->region,
        .chunk = chunk,
        .ns = MAX(ns - sink->t0, 0),
    };

    g_array_append_val(sink->entries, e);
}

void handoff_record_disk_stop(HandoffRecordDisk *d, int64_t t0,
                              GArray *entries)
{
    DiskLogSink sink = { .entries = entries, .region = d->region, .t0 = t0 };

    if (entries) {
        handoff_early_log_foreach(d->early, add_touch, &sink);
    }
    handoff_early_remove(d->filter);
    g_free(d);
}
