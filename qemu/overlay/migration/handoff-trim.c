/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Discards on the handed-off disk, recorded while a handoff runs.
 *
 * A guest that frees blocks (fstrim, a "discard" mount) sends IDE TRIM or
 * virtio-blk discard requests; both reach blk_co_do_pdiscard(), whose hook
 * (patch 0007) lands here, possibly in an iothread. With discard=unmap,
 * qcow2 v3 turns every whole cluster of such a request into a zero
 * cluster: it reads as zeros, and base data does not show through again.
 * The handoff must therefore send those chunks as zeros, never skip them,
 * and it can do so as one zero-run record per range instead of reading
 * and compressing their stale contents.
 *
 * The map (block-trim/, a bounded extent set) only says where to look:
 * the sender confirms with bdrv_block_status_above() that a range reads as
 * zeros before it sends a zero run, since a partial-cluster discard leaves
 * the old data, and a write after a discard is not recorded here (the
 * dirty bitmap makes the sender look at the chunk again, and the map
 * forgets what the block layer contradicts).
 *
 * One map per process, for the disk of the handoff in progress: the hook
 * reads the tracked BlockBackend and map without a lock, so a map is never
 * freed, only cleared (or retired when the disk's size changes).
 */
#include "qemu/osdep.h"
#include "block/block_int-common.h"
#include "qemu/atomic.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "sysemu/block-backend.h"
#include "handoff-internal.h"
#include "trim_map.h"
#include "trace.h"

static BlockBackend *tracked_blk;
static TrimMap *tracked_map;
static uint64_t tracked_bytes;
/* Maps of earlier disk sizes: a hook that read one may still be in it. */
static GSList *retired_maps;
/* discard_bytes of the map when the handoff started. */
static uint64_t discarded_at_start;

static void handoff_trim_discarded(BlockBackend *blk, int64_t offset,
                                   int64_t bytes)
{
    TrimMap *map = qatomic_read(&tracked_map);

    if (qatomic_read(&tracked_blk) != blk || !map || offset < 0 ||
        bytes <= 0) {
        return;
    }
    /* With discard=ignore the request changed nothing in the image. */
    if (!handoff_trim_discards_reach_image(blk)) {
        return;
    }
    trace_handoff_trim_discard(blk_name(blk), offset, bytes);
    trim_map_discard(map, offset, bytes);
}

void handoff_trim_init(void)
{
    blk_discard_hook = handoff_trim_discarded;
}

bool handoff_trim_discards_reach_image(BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);

    return bs && (bs->open_flags & BDRV_O_UNMAP);
}

void handoff_trim_warn_if_ignored(BlockBackend *blk)
{
    if (!handoff_trim_discards_reach_image(blk)) {
        warn_report("handoff: disk '%s' has discard=ignore: the guest's "
                    "TRIM and discard requests never reach its image, so "
                    "the blocks it frees are sent as data; use "
                    "discard=unmap on the drive", blk_name(blk));
    }
}

TrimMap *handoff_trim_start(BlockBackend *blk, uint64_t disk_bytes,
                            Error **errp)
{
    TrimMap *map = qatomic_read(&tracked_map);

    qatomic_set(&tracked_blk, NULL);
    if (map && tracked_bytes != disk_bytes) {
        /*
         * A hook in an iothread may have read the pointer before it was
         * unset: keep the old map (rare: only when the disk size changes).
         */
        retired_maps = g_slist_prepend(retired_maps, map);
        qatomic_set(&tracked_map, NULL);
        map = NULL;
    }
    if (!map) {
        int ret = trim_map_new(disk_bytes, 0, &map);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot track discards on disk '%s'",
                             blk_name(blk));
            return NULL;
        }
        tracked_bytes = disk_bytes;
        qatomic_set(&tracked_map, map);
    }
    trim_map_clear(map);
    discarded_at_start = 0;
    discarded_at_start = handoff_trim_discarded_bytes(map);
    qatomic_set(&tracked_blk, blk);
    return map;
}

void handoff_trim_stop(void)
{
    qatomic_set(&tracked_blk, NULL);
    if (tracked_map) {
        trim_map_clear(tracked_map);
    }
}

uint64_t handoff_trim_discarded_bytes(TrimMap *map)
{
    TrimMapStats st = { .struct_size = sizeof(st) };

    return map && trim_map_stats(map, &st) == 0
           ? st.discard_bytes - discarded_at_start : 0;
}
