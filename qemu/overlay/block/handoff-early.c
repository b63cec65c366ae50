/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qemu-handoff: the handoff-early block filter.
 *
 * Early start (docs/design/early-start.md, section 3.3) runs a VM while
 * its disk overlay is still arriving.  This filter sits on the overlay
 * node, whose backing is the base, and keeps one rule: no request sees
 * the base's bytes where the overlay carries others.  Chunks the overlay
 * carries start absent (handoff_early_mark_absent()); a read touching
 * one waits until it is placed; a write that covers one whole makes it
 * present (the guest's bytes win and a later placement of it is dropped);
 * a write that covers one in part waits like a read.  Placements
 * (handoff_early_place()) are queued to a coroutine that writes them to
 * the child, consecutive chunks in one request.
 *
 * With log-only=on nothing waits: the first touch of each chunk marked
 * absent is logged (when, in which order), for recording a working set.
 *
 * Threads: the guest's requests and the placement coroutine run in the
 * node's AioContext (an iothread's, or the main loop's); placements are
 * queued from any thread.  One QemuMutex, s->lock, guards the chunk
 * states, the queue and the counters; it is never held across I/O or a
 * yield (qemu_co_queue_wait() drops it while the coroutine sleeps), so
 * the vCPU or iothread that takes it waits at most for a bitmap update.
 * The placement coroutine counts as a request in flight on the node, so
 * a drain or an AioContext change waits for the queue to empty.
 *
 * A drain also waits for guest requests held on absent chunks: whoever
 * feeds placements must not need the drained context to do so.
 *
 * KVM changes nothing here: guest requests reach the filter from device
 * emulation, in the node's AioContext, or synchronously from a vCPU
 * thread that holds the BQL (IDE PIO, say), which then polls the main
 * AioContext itself and so runs the placement coroutine of a main-loop
 * node.  handoff_early_place() takes neither the BQL nor the AioContext,
 * so a feeder thread (early start's listen thread) is never blocked by
 * a vCPU waiting on a chunk.
 *
 * What a guest can make the filter allocate: nothing.  The chunk maps
 * are sized at open (no truncate), a waiting request sleeps on its own
 * coroutine (as many as the device queues), the log holds each chunk
 * marked absent at most once, and the placement queue is fed by the host
 * and bounded (HANDOFF_EARLY_QUEUE_MAX).
 */
#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/block_int-global-state.h"
#include "block/handoff-early.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "qemu/cutils.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "handoff-early-map.h"
#include "trace.h"

/*
 * Placements queued and not yet written (their memory not yet freed), in
 * bytes: the design's bound (section 3.2); the feeder back-pressures
 * beyond it.  An item also costs its header, so a feeder of tiny zero
 * runs is bounded too.
 */
#define HANDOFF_EARLY_QUEUE_MAX (16 * MiB)
/* Chunks written by one placement request at most (256 KiB). */
#define HANDOFF_EARLY_RUN_MAX 64

typedef struct HandoffEarlyItem {
    uint64_t first, count;
    uint8_t *data;          /* count chunks, or NULL for zeros */
    QSIMPLEQ_ENTRY(HandoffEarlyItem) next;
} HandoffEarlyItem;

/* Consecutive chunks of one kind, gathered for one write to the child. */
typedef struct HandoffEarlyRun {
    uint64_t first, count;
    bool zero;
    QEMUIOVector qiov;
    /* Items whose chunks are all in this run or written before it. */
    QSIMPLEQ_HEAD(, HandoffEarlyItem) done;
} HandoffEarlyRun;

typedef struct HandoffEarlyTouch {
    uint64_t chunk;
    int64_t ns;
} HandoffEarlyTouch;

struct BDRVHandoffEarlyState {
    BlockDriverState *bs;
    bool log_only;
    uint64_t length;

    QemuMutex lock;         /* guards all below */
    HandoffEarlyMap map;
    CoQueue waiters;        /* requests and placement held on a chunk */
    QSIMPLEQ_HEAD(, HandoffEarlyItem) queue;
    bool worker_running;
    int error;              /* a placement failed: waiters get it */
    GArray *log;            /* HandoffEarlyTouch, log-only mode */
    HandoffEarlyStats stats;
    HandoffEarlyDemandFn *demand;   /* early start's fetch of a chunk */
    void *demand_opaque;
};

static QemuOptsList handoff_early_runtime_opts = {
    .name = "handoff-early",
    .head = QTAILQ_HEAD_INITIALIZER(handoff_early_runtime_opts.head),
    .desc = {
        {
            .name = "log-only",
            .type = QEMU_OPT_BOOL,
            .help = "log the first touch of absent chunks, never wait",
        },
        { /* end of list */ }
    },
};

/* What a queued placement counts against HANDOFF_EARLY_QUEUE_MAX. */
static size_t placement_cost(uint64_t count, bool data)
{
    return sizeof(HandoffEarlyItem) + (data ? count * HANDOFF_EARLY_CHUNK : 0);
}

static size_t item_cost(const HandoffEarlyItem *item)
{
    return placement_cost(item->count, item->data);
}

static void item_free(HandoffEarlyItem *item)
{
    g_free(item->data);
    g_free(item);
}

/* s->lock held.  A chunk's first touch in log-only mode. */
static void handoff_early_log_touch(BDRVHandoffEarlyState *s,
                                    uint64_t first, uint64_t end)
{
    for (uint64_t c = first; c < end; c++) {
        if (handoff_early_map_is_absent(&s->map, c)) {
            HandoffEarlyTouch t = {
                .chunk = c, .ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME),
            };
            handoff_early_map_forget(&s->map, c);
            g_array_append_val(s->log, t);
            s->stats.touched++;
            trace_handoff_early_touch(s->bs->node_name, c);
        }
    }
}

/*
 * s->lock held.  Sleeps until woken, counting the request once; whoever
 * feeds placements hears of the absent chunks it waits for each time.
 */
static void coroutine_fn handoff_early_wait(BDRVHandoffEarlyState *s,
                                            bool *waited, uint64_t offset,
                                            uint64_t bytes)
{
    uint64_t first, end;

    if (!*waited) {
        *waited = true;
        s->stats.waits++;
        trace_handoff_early_wait(s->bs->node_name, offset, bytes);
    }
    if (s->demand) {
        handoff_early_map_span(offset, bytes, &first, &end);
        for (uint64_t c = first; c < end; c++) {
            if (handoff_early_map_is_absent(&s->map, c)) {
                s->demand(c, s->demand_opaque);
            }
        }
    }
    qemu_co_queue_wait(&s->waiters, &s->lock);
}

/*
 * Takes s->lock and holds a request until it may go: a read (or a
 * discard) while a chunk it touches is absent or busy; a write while a
 * chunk it touches is busy or one it cuts is absent.  Returns with the
 * lock held: 0, or the error that fails every request.
 */
static int coroutine_fn handoff_early_enter(BDRVHandoffEarlyState *s,
                                            uint64_t offset, uint64_t bytes,
                                            bool write)
{
    uint64_t first, end;
    bool waited = false;

    handoff_early_map_span(offset, bytes, &first, &end);
    qemu_mutex_lock(&s->lock);
    if (s->log_only) {
        handoff_early_log_touch(s, first, end);
    }
    while (!s->error &&
           (write ? handoff_early_map_write_waits(&s->map, s->length,
                                                  offset, bytes)
                  : handoff_early_map_any_absent(&s->map, first, end) ||
                    handoff_early_map_any_busy(&s->map, first, end))) {
        handoff_early_wait(s, &waited, offset, bytes);
    }
    return s->error;
}

static int coroutine_fn handoff_early_hold(BDRVHandoffEarlyState *s,
                                           uint64_t offset, uint64_t bytes)
{
    int ret = handoff_early_enter(s, offset, bytes, false);

    qemu_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Holds a write until it may go; then the absent chunks it covers whole
 * are its own (busy) until handoff_early_end_write(): a read meanwhile
 * waits for the guest's bytes rather than see the base's.  Sets @taken
 * to how many it took.
 */
static int coroutine_fn handoff_early_begin_write(BDRVHandoffEarlyState *s,
                                                  uint64_t offset,
                                                  uint64_t bytes,
                                                  uint64_t *taken)
{
    uint64_t first, end;
    int ret = handoff_early_enter(s, offset, bytes, true);

    *taken = 0;
    if (!ret) {
        handoff_early_map_span(offset, bytes, &first, &end);
        *taken = handoff_early_map_take_absent(&s->map, first, end);
        s->stats.superseded += *taken;
        if (*taken) {
            trace_handoff_early_supersede(s->bs->node_name, first, end - first,
                                          *taken);
        }
    }
    qemu_mutex_unlock(&s->lock);
    return ret;
}

/*
 * The write is done.  Its chunks are present; if it failed they are
 * absent again, so the stream's bytes are still placed (the placement
 * coroutine waited for them rather than drop them).
 */
static void coroutine_fn handoff_early_end_write(BDRVHandoffEarlyState *s,
                                                 uint64_t offset,
                                                 uint64_t bytes,
                                                 uint64_t taken, int ret)
{
    uint64_t first, end;

    if (!taken) {
        return;
    }
    handoff_early_map_span(offset, bytes, &first, &end);
    qemu_mutex_lock(&s->lock);
    handoff_early_map_end_busy(&s->map, first, end, ret < 0);
    if (ret < 0) {
        s->stats.superseded -= taken;
    }
    qemu_co_queue_restart_all(&s->waiters);
    qemu_mutex_unlock(&s->lock);
}

static int coroutine_fn handoff_early_co_preadv_part(BlockDriverState *bs,
                                                     int64_t offset,
                                                     int64_t bytes,
                                                     QEMUIOVector *qiov,
                                                     size_t qiov_offset,
                                                     BdrvRequestFlags flags)
{
    int ret = handoff_early_hold(bs->opaque, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset,
                               flags);
}

/*
 * A write of data (@qiov) or of zeros (@qiov NULL): zeros written are the
 * guest's bytes as much as data, so the same rule holds.
 */
static int coroutine_fn handoff_early_co_write(BlockDriverState *bs,
                                               int64_t offset, int64_t bytes,
                                               QEMUIOVector *qiov,
                                               size_t qiov_offset,
                                               BdrvRequestFlags flags)
{
    BDRVHandoffEarlyState *s = bs->opaque;
    uint64_t taken;
    int ret = handoff_early_begin_write(s, offset, bytes, &taken);

    if (ret < 0) {
        return ret;
    }
    ret = qiov ? bdrv_co_pwritev_part(bs->file, offset, bytes, qiov,
                                      qiov_offset, flags)
               : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    handoff_early_end_write(s, offset, bytes, taken, ret);
    return ret;
}

static int coroutine_fn handoff_early_co_pwritev_part(BlockDriverState *bs,
                                                      int64_t offset,
                                                      int64_t bytes,
                                                      QEMUIOVector *qiov,
                                                      size_t qiov_offset,
                                                      BdrvRequestFlags flags)
{
    return handoff_early_co_write(bs, offset, bytes, qiov, qiov_offset,
                                  flags);
}

static int coroutine_fn handoff_early_co_pwrite_zeroes(BlockDriverState *bs,
                                                       int64_t offset,
                                                       int64_t bytes,
                                                       BdrvRequestFlags flags)
{
    return handoff_early_co_write(bs, offset, bytes, NULL, 0, flags);
}

/*
 * A discard does not make a chunk present: qcow2 ignores a discard of
 * less than a cluster (64 KiB), which would leave the base's bytes there.
 * It waits for its chunks like a read, then goes through.
 */
static int coroutine_fn handoff_early_co_pdiscard(BlockDriverState *bs,
                                                  int64_t offset,
                                                  int64_t bytes)
{
    int ret = handoff_early_hold(bs->opaque, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

/* s->lock held; dropped while the run is written. */
static void coroutine_fn handoff_early_flush_run(BDRVHandoffEarlyState *s,
                                                 HandoffEarlyRun *run)
{
    BdrvChild *file = s->bs->file;
    uint64_t offset = run->first << HANDOFF_EARLY_CHUNK_BITS;
    uint64_t bytes = MIN(run->count * HANDOFF_EARLY_CHUNK, s->length - offset);
    HandoffEarlyItem *item;
    int ret;

    if (run->count) {
        qemu_mutex_unlock(&s->lock);
        trace_handoff_early_place(s->bs->node_name, run->first, run->count,
                                  run->zero);
        ret = run->zero
            ? bdrv_co_pwrite_zeroes(file, offset, bytes, BDRV_REQ_MAY_UNMAP)
            : bdrv_co_pwritev_part(file, offset, bytes, &run->qiov, 0, 0);
        qemu_mutex_lock(&s->lock);
        handoff_early_map_end_busy(&s->map, run->first,
                                   run->first + run->count, ret < 0);
        if (ret < 0) {
            /* Never base bytes instead: every waiter fails from now on. */
            s->error = ret;
            trace_handoff_early_place_failed(s->bs->node_name, run->first,
                                             ret);
        } else {
            s->stats.writes++;
            s->stats.placed += run->count;
        }
        qemu_co_queue_restart_all(&s->waiters);
    }
    run->count = 0;
    qemu_iovec_reset(&run->qiov);
    while ((item = QSIMPLEQ_FIRST(&run->done))) {
        QSIMPLEQ_REMOVE_HEAD(&run->done, next);
        s->stats.queued_bytes -= item_cost(item);
        item_free(item);
    }
}

/* s->lock held.  Adds chunk @c of @item to @run, or drops it. */
static void coroutine_fn handoff_early_place_chunk(BDRVHandoffEarlyState *s,
                                                   HandoffEarlyRun *run,
                                                   HandoffEarlyItem *item,
                                                   uint64_t c)
{
    bool zero = !item->data;

    /* A guest write owns it: wait for its outcome, present or not. */
    while (!s->error && handoff_early_map_is_busy(&s->map, c)) {
        handoff_early_flush_run(s, run);
        qemu_co_queue_wait(&s->waiters, &s->lock);
    }
    if (s->error) {
        return;
    }
    if (!handoff_early_map_is_absent(&s->map, c)) {
        s->stats.dropped++;
        trace_handoff_early_drop(s->bs->node_name, c);
        return;
    }
    if (run->count && (run->first + run->count != c || run->zero != zero ||
                       run->count == HANDOFF_EARLY_RUN_MAX)) {
        handoff_early_flush_run(s, run);
    }
    handoff_early_map_take_absent(&s->map, c, c + 1);
    if (!run->count) {
        run->first = c;
        run->zero = zero;
    }
    if (!zero) {
        qemu_iovec_add(&run->qiov,
                       item->data + (c - item->first) * HANDOFF_EARLY_CHUNK,
                       HANDOFF_EARLY_CHUNK);
    }
    run->count++;
}

/*
 * The placement coroutine, in the node's AioContext, while the queue has
 * items; started by handoff_early_place(), which took the in-flight
 * reference this drops.
 */
static void coroutine_fn handoff_early_worker(void *opaque)
{
    BDRVHandoffEarlyState *s = opaque;
    BlockDriverState *bs = s->bs;
    HandoffEarlyRun run = { .count = 0 };
    HandoffEarlyItem *item;

    qemu_iovec_init(&run.qiov, HANDOFF_EARLY_RUN_MAX);
    QSIMPLEQ_INIT(&run.done);
    qemu_mutex_lock(&s->lock);
    /*
     * The last flush drops the lock while it writes: what was queued
     * meanwhile found worker_running set and started no worker, so it is
     * this one's. Done only when the queue is empty after a flush.
     */
    do {
        while ((item = QSIMPLEQ_FIRST(&s->queue))) {
            QSIMPLEQ_REMOVE_HEAD(&s->queue, next);
            for (uint64_t c = item->first; c < item->first + item->count;
                 c++) {
                handoff_early_place_chunk(s, &run, item, c);
            }
            QSIMPLEQ_INSERT_TAIL(&run.done, item, next);
        }
        handoff_early_flush_run(s, &run);
    } while (!QSIMPLEQ_EMPTY(&s->queue));
    s->worker_running = false;
    qemu_mutex_unlock(&s->lock);
    qemu_iovec_destroy(&run.qiov);
    bdrv_dec_in_flight(bs);
}

BDRVHandoffEarlyState *handoff_early_of(BlockDriverState *bs, Error **errp)
{
    if (!bs->drv || strcmp(bs->drv->format_name, "handoff-early")) {
        error_setg(errp, "node '%s' is not a handoff-early filter",
                   bdrv_get_node_name(bs));
        return NULL;
    }
    return bs->opaque;
}

static bool handoff_early_check_range(BDRVHandoffEarlyState *s,
                                      uint64_t first, uint64_t count,
                                      Error **errp)
{
    if (!count || first >= s->map.chunks || count > s->map.chunks - first) {
        error_setg(errp, "chunks %" PRIu64 "+%" PRIu64 " are not within "
                   "node '%s' (%" PRIu64 " chunks of 4 KiB)", first, count,
                   bdrv_get_node_name(s->bs), s->map.chunks);
        return false;
    }
    return true;
}

/*
 * Placements write the child: not on a read-only node (the child has no
 * write permission), nor on an inactive one (an incoming migration's,
 * before it completes), where the block layer refuses writes.  Chunks
 * marked absent there would wait for ever.
 */
static bool handoff_early_writable(BDRVHandoffEarlyState *s, Error **errp)
{
    const char *name = bdrv_get_node_name(s->bs);

    if (bdrv_is_read_only(s->bs)) {
        error_setg(errp, "node '%s' is read-only: nothing can be placed",
                   name);
    } else if (s->bs->open_flags & BDRV_O_INACTIVE) {
        error_setg(errp, "node '%s' is inactive (an incoming migration's): "
                   "nothing can be placed yet", name);
    } else {
        return true;
    }
    return false;
}

bool handoff_early_mark_absent(BDRVHandoffEarlyState *s, uint64_t first,
                               uint64_t count, Error **errp)
{
    uint64_t marked;

    if (!handoff_early_check_range(s, first, count, errp) ||
        (!s->log_only && !handoff_early_writable(s, errp))) {
        return false;
    }
    qemu_mutex_lock(&s->lock);
    /*
     * A logged chunk is no longer marked: marked again, its next touch
     * would be logged again, and a caller repeating this while the guest
     * does I/O would grow the log without bound.
     */
    if (s->log_only && s->log->len) {
        qemu_mutex_unlock(&s->lock);
        error_setg(errp, "node '%s' has logged first touches already: "
                   "chunks are marked once, before the guest runs",
                   bdrv_get_node_name(s->bs));
        return false;
    }
    marked = handoff_early_map_mark_absent(&s->map, first, first + count);
    qemu_mutex_unlock(&s->lock);
    trace_handoff_early_mark_absent(s->bs->node_name, first, count, marked);
    return true;
}

/* Why @s cannot take a placement now, if it cannot. */
static bool handoff_early_can_place(BDRVHandoffEarlyState *s, size_t cost,
                                    Error **errp)
{
    const char *name = bdrv_get_node_name(s->bs);

    if (s->log_only) {
        error_setg(errp, "node '%s' only logs (log-only=on): nothing to "
                   "place", name);
    } else if (!handoff_early_writable(s, errp)) {
        return false;
    } else if (s->error) {
        error_setg(errp, "node '%s': an earlier placement failed: %s",
                   name, strerror(-s->error));
    } else if (s->stats.queued_bytes + cost > HANDOFF_EARLY_QUEUE_MAX) {
        error_setg(errp, "node '%s': %" PRIu64 " bytes of placements are "
                   "queued already; at most %" PRId64, name,
                   s->stats.queued_bytes,
                   HANDOFF_EARLY_QUEUE_MAX);
    } else {
        return true;
    }
    return false;
}

/*
 * Queues @n placements whole or none: each range checked, their cost
 * against the bound together, all queued under one lock and the worker
 * started once, so a list's consecutive chunks are written together.
 */
bool handoff_early_place_many(BDRVHandoffEarlyState *s,
                              const HandoffEarlyChunks *chunks, size_t n,
                              Error **errp)
{
    size_t i, cost = 0;
    bool start;

    for (i = 0; i < n; i++) {
        if (!handoff_early_check_range(s, chunks[i].first, chunks[i].count,
                                       errp)) {
            return false;
        }
        cost += placement_cost(chunks[i].count, chunks[i].data);
    }
    qemu_mutex_lock(&s->lock);
    if (!handoff_early_can_place(s, cost, errp)) {
        qemu_mutex_unlock(&s->lock);
        return false;
    }
    for (i = 0; i < n; i++) {
        HandoffEarlyItem *item = g_new0(HandoffEarlyItem, 1);

        item->first = chunks[i].first;
        item->count = chunks[i].count;
        item->data = chunks[i].data;
        QSIMPLEQ_INSERT_TAIL(&s->queue, item, next);
    }
    s->stats.queued_bytes += cost;
    start = !s->worker_running;
    s->worker_running = true;
    qemu_mutex_unlock(&s->lock);
    if (start) {
        /* Dropped by the worker: until then a drain waits for it. */
        bdrv_inc_in_flight(s->bs);
        aio_co_schedule(bdrv_get_aio_context(s->bs),
                        qemu_coroutine_create(handoff_early_worker, s));
    }
    return true;
}

bool handoff_early_place(BDRVHandoffEarlyState *s, uint64_t first,
                         uint64_t count, uint8_t *data, Error **errp)
{
    HandoffEarlyChunks one = { .first = first, .count = count, .data = data };

    if (!handoff_early_place_many(s, &one, 1, errp)) {
        g_free(data);
        return false;
    }
    return true;
}

void handoff_early_stats(BDRVHandoffEarlyState *s, HandoffEarlyStats *stats)
{
    qemu_mutex_lock(&s->lock);
    *stats = s->stats;
    stats->chunks = s->map.chunks;
    stats->absent = s->map.absent_count;
    qemu_mutex_unlock(&s->lock);
}

int handoff_early_error(BDRVHandoffEarlyState *s)
{
    int error;

    qemu_mutex_lock(&s->lock);
    error = s->error;
    qemu_mutex_unlock(&s->lock);
    return error;
}

void handoff_early_set_demand(BDRVHandoffEarlyState *s,
                              HandoffEarlyDemandFn *fn, void *opaque)
{
    qemu_mutex_lock(&s->lock);
    s->demand = fn;
    s->demand_opaque = opaque;
    qemu_mutex_unlock(&s->lock);
}

BlockDriverState *handoff_early_insert(BlockDriverState *bs,
                                       const char *node_name, bool log_only,
                                       Error **errp)
{
    AioContext *ctx = bdrv_get_aio_context(bs);
    QDict *opts = qdict_new();
    BlockDriverState *filter;

    qdict_put_str(opts, "driver", "handoff-early");
    qdict_put_str(opts, "node-name", node_name);
    qdict_put_str(opts, "file", bdrv_get_node_name(bs));
    qdict_put_str(opts, "log-only", log_only ? "on" : "off");
    aio_context_acquire(ctx);
    filter = bdrv_insert_node(bs, opts, BDRV_O_RDWR, errp);
    aio_context_release(ctx);
    return filter;
}

void handoff_early_remove(BlockDriverState *filter)
{
    AioContext *ctx = bdrv_get_aio_context(filter);

    aio_context_acquire(ctx);
    /* Its only parent goes back to the child: nothing can fail here. */
    bdrv_drop_filter(filter, &error_abort);
    bdrv_unref(filter);
    aio_context_release(ctx);
}

void handoff_early_log_foreach(BDRVHandoffEarlyState *s,
                               void (*fn)(uint64_t chunk, int64_t ns,
                                          void *opaque),
                               void *opaque)
{
    qemu_mutex_lock(&s->lock);
    for (guint i = 0; i < s->log->len; i++) {
        HandoffEarlyTouch *t = &g_array_index(s->log, HandoffEarlyTouch, i);

        fn(t->chunk, t->ns, opaque);
    }
    qemu_mutex_unlock(&s->lock);
}

static int handoff_early_open(BlockDriverState *bs, QDict *options,
                              int flags, Error **errp)
{
    BDRVHandoffEarlyState *s = bs->opaque;
    QemuOpts *opts;
    int64_t length;
    int ret;

    ret = bdrv_open_file_child(NULL, options, "file", bs, errp);
    if (ret < 0) {
        return ret;
    }
    opts = qemu_opts_create(&handoff_early_runtime_opts, NULL, 0,
                            &error_abort);
    if (!qemu_opts_absorb_qdict(opts, options, errp)) {
        qemu_opts_del(opts);
        return -EINVAL;
    }
    s->log_only = qemu_opt_get_bool(opts, "log-only", false);
    qemu_opts_del(opts);

    length = bdrv_getlength(bs->file->bs);
    if (length < 0) {
        error_setg_errno(errp, -length, "cannot get the size of '%s'",
                         bdrv_get_node_name(bs->file->bs));
        return length;
    }
    s->bs = bs;
    s->length = length;
    handoff_early_map_init(&s->map, length);
    qemu_mutex_init(&s->lock);
    qemu_co_queue_init(&s->waiters);
    QSIMPLEQ_INIT(&s->queue);
    s->log = g_array_new(false, false, sizeof(HandoffEarlyTouch));

    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED |
        (BDRV_REQ_FUA & bs->file->bs->supported_write_flags);
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED |
        ((BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
            bs->file->bs->supported_zero_flags);
    return 0;
}

/* The node is drained: no request and no placement coroutine runs. */
static void handoff_early_close(BlockDriverState *bs)
{
    BDRVHandoffEarlyState *s = bs->opaque;
    HandoffEarlyItem *item;

    while ((item = QSIMPLEQ_FIRST(&s->queue))) {
        QSIMPLEQ_REMOVE_HEAD(&s->queue, next);
        item_free(item);
    }
    g_array_free(s->log, true);
    handoff_early_map_destroy(&s->map);
    qemu_mutex_destroy(&s->lock);
}

static int64_t handoff_early_getlength(BlockDriverState *bs)
{
    return bdrv_getlength(bs->file->bs);
}

/* Placements write the child even when no parent writes through us. */
static void handoff_early_child_perm(BlockDriverState *bs, BdrvChild *c,
                                     BdrvChildRole role,
                                     BlockReopenQueue *reopen_queue,
                                     uint64_t perm, uint64_t shared,
                                     uint64_t *nperm, uint64_t *nshared)
{
    bdrv_default_perms(bs, c, role, reopen_queue, perm, shared,
                       nperm, nshared);
    if (!bdrv_is_read_only(bs)) {
        *nperm |= BLK_PERM_WRITE;
    }
}

/*
 * The chunk map keeps the size it opened with: a resize (block_resize, a
 * device's) is refused here, since without .bdrv_co_truncate the block
 * layer passes it to the child and requests past the map would follow.
 */
static int coroutine_fn handoff_early_co_truncate(BlockDriverState *bs,
                                                  int64_t offset, bool exact,
                                                  PreallocMode prealloc,
                                                  BdrvRequestFlags flags,
                                                  Error **errp)
{
    error_setg(errp, "node '%s' (handoff-early) cannot be resized",
               bdrv_get_node_name(bs));
    return -ENOTSUP;
}

/*
 * No .bdrv_co_block_status: the block layer then reports every range as
 * data, where the child's status would show an absent chunk as the
 * base's.
 */
static BlockDriver bdrv_handoff_early = {
    .format_name                = "handoff-early",
    .instance_size              = sizeof(BDRVHandoffEarlyState),

    .bdrv_open                  = handoff_early_open,
    .bdrv_close                 = handoff_early_close,
    .bdrv_child_perm            = handoff_early_child_perm,
    .bdrv_getlength             = handoff_early_getlength,
    .bdrv_co_truncate           = handoff_early_co_truncate,

    .bdrv_co_preadv_part        = handoff_early_co_preadv_part,
    .bdrv_co_pwritev_part       = handoff_early_co_pwritev_part,
    .bdrv_co_pwrite_zeroes      = handoff_early_co_pwrite_zeroes,
    .bdrv_co_pdiscard           = handoff_early_co_pdiscard,

    .is_filter                  = true,
};

static void bdrv_handoff_early_init(void)
{
    bdrv_register(&bdrv_handoff_early);
}

block_init(bdrv_handoff_early_init);
