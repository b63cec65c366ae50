/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The rounds of an outgoing handoff (handoff-save.c). A round is what a
 * sync of the dirty logs holds (round 0: everything setup marked, every
 * RAM page and every chunk the disk overlay has allocated), less what the
 * guest then reports free. save_live_pending starts the next round when
 * the rest fits the downtime limit or the round is all sent, and lets the
 * core switch over once the rest fits; the last round runs with the VM
 * stopped.
 */
#include "qemu/osdep.h"
#include "block/dirty-bitmap.h"
#include "exec/ram_addr.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "migration/misc.h"
#include "qapi/error.h"
#include "qemu-file.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "sysemu/cpu-throttle.h"
#include "sysemu/tcg.h"
#include "handoff-overlay.h"
#include "handoff-save.h"
#include "handoff-stream.h"
#include "trace.h"

/* Work done per call of save_live_iterate before yielding to the core. */
#define ITERATE_BUDGET_NS (50 * SCALE_MS)
/* After this many rounds the rest goes in the downtime, whatever its size. */
#define MAX_ROUNDS 100

static void add_item(HandoffSaveState *s, uint32_t region, uint64_t index)
{
    HandoffItem item = { .region = region, .index = index };

    g_array_append_val(s->round, item);
}

/* Fisher-Yates with a per-round seed: reproducible, and hot pages spread. */
static void shuffle(HandoffSaveState *s, size_t from, size_t to)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(0x68616e64 ^ s->iteration);
    HandoffItem *items = &g_array_index(s->round, HandoffItem, 0);
    size_t i;

    for (i = to - 1; i > from; i--) {
        size_t j = from + g_rand_int_range(rand, 0, i - from + 1);
        HandoffItem t = items[i];

        items[i] = items[j];
        items[j] = t;
    }
}

/*
 * Moves the memory dirty log into the round (and the blocks' pending
 * maps); returns how many pages it held. After memory_global_dirty_log_
 * sync(), under the RCU read lock the caller holds.
 */
static uint64_t take_memory_log(HandoffSaveState *s)
{
    uint64_t dirty_pages = 0;
    size_t i;

    for (i = 0; i < s->n_blocks; i++) {
        HandoffBlock *b = &s->blocks[i];
        unsigned long page;

        /*
         * Moves the global log into rb->bmap and clears it. Under TCG
         * a vCPU writes a page whose TLB entry is writable without
         * marking it: once its bit is cleared, the entry must be made
         * to take the marking path again, and only after the clear (a
         * page marked in between would keep a writable entry with a
         * clear bit, and its next writes would be lost).
         */
        cpu_physical_memory_sync_dirty_bitmap(b->rb, 0,
                                              b->pages * TARGET_PAGE_SIZE);
        if (tcg_enabled()) {
            tlb_reset_dirty_range_all(b->rb->offset,
                                      b->pages * TARGET_PAGE_SIZE);
        }
        for (page = find_first_bit(b->rb->bmap, b->pages);
             page < b->pages;
             page = find_next_bit(b->rb->bmap, b->pages, page + 1)) {
            int c;

            for (c = 0; c < CHUNKS_PER_PAGE; c++) {
                add_item(s, b->region, page * CHUNKS_PER_PAGE + c);
            }
            bitmap_set(b->pending, page * CHUNKS_PER_PAGE, CHUNKS_PER_PAGE);
            dirty_pages++;
        }
        bitmap_zero(b->rb->bmap, b->pages);
    }
    return dirty_pages;
}

/*
 * Moves the disks' dirty bitmaps into the round; returns how many chunks
 * they held. Disk chunks stay in offset order: they are read in runs.
 */
static uint64_t take_disk_log(HandoffSaveState *s)
{
    uint64_t dirty_disk = 0;
    size_t i;

    for (i = 0; s->disks && i < s->disks->n; i++) {
        HandoffDisk *d = &s->disks->disk[i];
        BdrvDirtyBitmap *dirty = s->disk_dirty[i];
        int64_t off = 0;

        bdrv_dirty_bitmap_lock(dirty);
        while ((off = bdrv_dirty_bitmap_next_dirty(dirty, off,
                                                   INT64_MAX)) >= 0) {
            add_item(s, d->region, off / HANDOFF_CHUNK_SIZE);
            dirty_disk++;
            off += HANDOFF_CHUNK_SIZE;
        }
        bdrv_reset_dirty_bitmap_locked(dirty, 0, d->size);
        bdrv_dirty_bitmap_unlock(dirty);
    }
    return dirty_disk;
}

/*
 * Called with the BQL: moves both dirty logs into a new round. Chunks the
 * previous round had not offered yet stay in it, ahead of the new ones (a
 * round may end early when the rest is estimated to fit the downtime).
 */
void handoff_save_start_round(HandoffSaveState *s)
{
    uint64_t dirty_pages, dirty_disk;
    Error *err = NULL;
    size_t carried;

    /* virtio-balloon stops hinting before the sync, as around ram.c's. */
    handoff_hints_stop();
    if (precopy_notify(PRECOPY_NOTIFY_BEFORE_BITMAP_SYNC, &err)) {
        error_report_err(err);
    }

    g_array_remove_range(s->round, 0, s->next);
    s->next = 0;
    carried = s->round->len;
    s->memory_sent = s->disk_sent = 0;
    s->round_freed = 0;

    memory_global_dirty_log_sync();
    WITH_RCU_READ_LOCK_GUARD() {
        dirty_pages = take_memory_log(s);
    }
    /*
     * A store that passed its TLB check before the reset may still be on
     * its way: wait until every vCPU has left its translation block, so
     * that the pages read from now on hold it.
     */
    memory_global_after_dirty_log_sync();
    if (s->random_order && s->round->len > carried + 1) {
        shuffle(s, carried, s->round->len);
    }
    dirty_disk = take_disk_log(s);
    trace_handoff_save_round(s->iteration, dirty_pages, dirty_disk);
}

/*
 * With the BQL, right after a round's sync: asks the guest agent which
 * memory is free. The safety rule (docs/guest-agent.md): the guest takes
 * its list at some instant T after this request, so after the sync; a
 * page it reports and writes after T must reach the dirty log and go out
 * in the next round. TCG marks such a write (the sync reset the TLB's
 * dirty state). KVM with manual dirty-log protect leaves every page the
 * sync fetched writable and unlogged until its log is cleared, which
 * handoff_save_send_round does page by page as it reads them: a page
 * reported free, then written before its clear, would lose that write. So
 * the log of everything the sync fetched is cleared here, before the guest
 * is asked, as ram.c clears the whole log when it has no clear_bmap (and,
 * for balloon hints, clears each hinted range). Only when something may
 * report: on a large KVM guest the clear is a stall.
 */
void handoff_save_request_free_memory(HandoffSaveState *s)
{
    Error *err = NULL;
    size_t i;

    s->generation = 0;
    if (!handoff_agent_present() && !handoff_hints_possible()) {
        return;
    }
    s->generation = s->iteration + 1;
    for (i = 0; i < s->n_blocks; i++) {
        RAMBlock *rb = s->blocks[i].rb;
        uint64_t page, step = rb->clear_bmap ? 1ULL << rb->clear_bmap_shift
                                             : s->blocks[i].pages;

        for (page = 0; page < s->blocks[i].pages; page += step) {
            handoff_save_clear_dirty_log(rb, page);
        }
    }
    handoff_agent_request(s->generation);
    /*
     * virtio-balloon with free-page-hint=on starts a new hinting command
     * here, as after ram.c's sync; its hints count for this round only.
     */
    handoff_hints_accept(s->generation);
    if (precopy_notify(PRECOPY_NOTIFY_AFTER_BITMAP_SYNC, &err)) {
        error_report_err(err);
    }
}

static void next_round(HandoffSaveState *s, QEMUFile *f)
{
    MigrationState *ms = migrate_get_current();
    uint64_t sent = qemu_file_total_transferred_fast(f) - s->bytes_at_round;
    uint64_t dirtied;

    s->iteration++;
    handoff_encoder_begin_iteration(s->enc, s->iteration);
    handoff_save_start_round(s);
    handoff_save_request_free_memory(s);

    /*
     * Auto-converge as ram.c does it: a guest that dirties more than the
     * trigger share of what the link carried, twice, is slowed down.
     */
    dirtied = (uint64_t)s->round->len * HANDOFF_CHUNK_SIZE;
    if (migrate_auto_converge() && s->iteration > 1 &&
        dirtied > sent * ms->parameters.throttle_trigger_threshold / 100 &&
        ++s->dirty_high >= 2) {
        int pct = cpu_throttle_active()
                  ? cpu_throttle_get_percentage() +
                    ms->parameters.cpu_throttle_increment
                  : ms->parameters.cpu_throttle_initial;

        s->dirty_high = 0;
        pct = MIN(pct, ms->parameters.max_cpu_throttle);
        cpu_throttle_set(pct);
        trace_handoff_save_throttle(pct);
    }
    s->bytes_at_round = qemu_file_total_transferred_fast(f);
}

/*
 * A segmented stream, finished: its table part goes into @f, its segments
 * and root to the overlay being saved, which writes the segments after
 * the migration stream (docs/overlay-format.md, "Early start"), so that
 * the device state arrives before them and a VM can start while they
 * still arrive.
 */
static int hand_over_segments(HandoffSaveState *s, QEMUFile *f)
{
    g_autoptr(GByteArray) stream = g_byte_array_new();
    uint8_t root[HANDOFF_ROOT_SIZE];
    uint64_t table_len = 0, at;
    int rc;

    for (;;) {
        size_t produced = 0;

        rc = handoff_encoder_pull_wait(s->enc, s->out, HANDOFF_BLOCK_MAX,
                                       &produced);
        if (rc < 0) {
            return handoff_save_engine_failed(f, rc, "handoff encoder");
        }
        if (!produced) {
            break;
        }
        if (produced > G_MAXUINT - stream->len) {
            error_report("handoff: a segmented stream of more than 4 GiB: "
                         "this QEMU does not write one");
            qemu_file_set_error(f, -EFBIG);
            return -EFBIG;
        }
        g_byte_array_append(stream, s->out, produced);
    }
    rc = handoff_encoder_segment_root(s->enc, root);
    if (rc == 0) {
        rc = handoff_segment_table_length(stream->data, stream->len,
                                          &table_len);
    }
    if (rc < 0) {
        return handoff_save_engine_failed(f, rc, "handoff encoder");
    }
    for (at = 0; at < table_len; at += HANDOFF_BLOCK_MAX) {
        uint32_t n = MIN(table_len - at, HANDOFF_BLOCK_MAX);

        qemu_put_byte(f, HANDOFF_BLOCK_DATA);
        qemu_put_be32(f, n);
        qemu_put_buffer(f, stream->data + at, n);
    }
    handoff_overlay_save_set_segments(root, g_steal_pointer(&stream),
                                      table_len);
    return qemu_file_get_error(f);
}

/*
 * Ends the engine's stream and moves it into @f, or for a segmented one
 * its table part (above).
 */
static int finish_stream(HandoffSaveState *s, QEMUFile *f)
{
    int rc = handoff_encoder_finish(s->enc);
    int ret = rc < 0 ? handoff_save_engine_failed(f, rc, "handoff encoder")
              : s->segmented ? hand_over_segments(s, f)
              : handoff_save_drain_encoder(s, f, true);

    s->finished = ret == 0;
    return ret;
}

/* Without the BQL. Returns 1 when the round has been offered entirely. */
int handoff_save_iterate(QEMUFile *f, void *opaque)
{
    HandoffSaveState *s = handoff_save_state;
    int ret;

    if (!s || !s->enc) {
        return -EINVAL;
    }
    if (s->next >= s->round->len) {
        /* Nothing dirty yet: let the link drain rather than spin. */
        g_usleep(10 * 1000);
    }
    ret = handoff_save_send_round(s, f,
                                  qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                                  ITERATE_BUDGET_NS, false);
    /*
     * A segmented stream is laid out and compressed at its finish, in one
     * thread (minutes for a large VM at lzma-6): here, without the BQL,
     * not in the completion, which holds it and would stall the monitor.
     * Its VM is paused, so the round just offered is the last with
     * chunks; one the completion still finds (a VM resumed meanwhile)
     * fails the save, the finished engine taking no more.
     */
    if (ret == 0 && s->segmented && !s->finished &&
        s->next >= s->round->len) {
        ret = finish_stream(s, f);
    }
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    handoff_save_update_stats(s);
    if (ret < 0) {
        return ret;
    }
    return s->next >= s->round->len;
}

void handoff_save_pending(QEMUFile *f, void *opaque,
                          uint64_t threshold,
                          uint64_t *res_precopy_only,
                          uint64_t *res_compatible,
                          uint64_t *res_postcopy_only)
{
    HandoffSaveState *s = handoff_save_state;
    MigrationState *ms = migrate_get_current();
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    uint64_t remaining, fits;
    double rate;

    /* The core stops before asking when setup failed; be sure anyway. */
    if (!s || !s->enc || handoff_encoder_stats(s->enc, &st) < 0) {
        return;
    }
    /*
     * A segmented stream's bytes leave the engine only at its finish, so
     * the estimate below, priced from bytes already out, says nothing
     * left: the core would complete at once and send the round with the
     * BQL held. Not done until iterate offered its (paused) VM's round
     * and finished the stream; then done, with no other round.
     */
    if (s->segmented) {
        *res_precopy_only += s->finished ? 0 : MAX(threshold, 1);
        return;
    }
    /*
     * What fits the downtime. The core's @threshold comes from the rate of
     * writes into the socket, which a send buffer of seconds makes far
     * higher than the link's in bursts; the engine's estimate is what the
     * link carried. The lower of the two decides. Of the engine's, the
     * rate the link carried when it was the bottleneck: near the end the
     * sender starves the link and the controller's estimate probes
     * upwards (doubling each decision), so that the last round could hold
     * twice what fits or more (at the end of one ocr move at 25 Mbit/s
     * it read 47 Mbit/s).
     */
    fits = threshold;
    rate = st.link_bps > 0 ? st.link_bps : st.bandwidth_bps;
    if (rate > 0) {
        fits = MIN(fits, rate * ms->parameters.downtime_limit / 1000);
    }
    remaining = handoff_save_remaining_bytes(s, f, &st);
    /*
     * A new round when the rest fits the downtime (it may end the
     * handoff), or when this one is all sent: while the socket drains,
     * pages dirtied meanwhile go out instead of piling up for the stop.
     */
    if ((remaining < fits || s->next >= s->round->len) &&
        s->iteration < MAX_ROUNDS) {
        qemu_mutex_lock_iothread();
        next_round(s, f);
        qemu_mutex_unlock_iothread();
        remaining = handoff_save_remaining_bytes(s, f, &st);
    }
    if (s->iteration >= MAX_ROUNDS) {
        /* Bounded: what is left goes in the downtime. */
        remaining = 0;
    } else if (remaining >= fits) {
        /* Not yet, whatever the core's own threshold says. */
        remaining = MAX(remaining, threshold);
    }
    trace_handoff_save_pending(s->round->len - s->next, remaining, fits);
    *res_precopy_only += remaining;
}

/*
 * What the destination holds as zeros for free memory, once the stream is
 * complete: a test's identity proof accepts zeros there and only there.
 */
static void trace_free_final(HandoffSaveState *s)
{
    size_t i;

    if (!trace_event_get_state_backends(TRACE_HANDOFF_SAVE_FREE_FINAL)) {
        return;
    }
    for (i = 0; i < s->n_blocks; i++) {
        HandoffBlock *b = &s->blocks[i];
        uint64_t chunks = b->pages * CHUNKS_PER_PAGE, first, end;

        for (first = find_first_bit(b->sent_free, chunks); first < chunks;
             first = find_next_bit(b->sent_free, chunks, end)) {
            end = find_next_zero_bit(b->sent_free, chunks, first);
            trace_handoff_save_free_final(qemu_ram_get_idstr(b->rb),
                                          first * HANDOFF_CHUNK_SIZE,
                                          (end - first) * HANDOFF_CHUNK_SIZE);
        }
    }
}

/*
 * VM stopped, BQL held (kept: nothing may change the VM or its disk now):
 * the last round, then the end of the stream.
 */
int handoff_save_complete(QEMUFile *f, void *opaque)
{
    HandoffSaveState *s = handoff_save_state;
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    Error *err = NULL;
    int ret;

    /* No report applies to the stopped round: its list is final. */
    handoff_agent_forget();
    s->generation = 0;
    s->iteration++;
    handoff_encoder_begin_iteration(s->enc, s->iteration);
    handoff_save_start_round(s);
    /* With the VM stopped, the balloon tells the guest hinting is done. */
    if (precopy_notify(PRECOPY_NOTIFY_AFTER_BITMAP_SYNC, &err)) {
        error_report_err(err);
    }
    ret = handoff_save_send_round(s, f, 0, true);
    if (ret == 0 && !s->finished) {
        ret = finish_stream(s, f);
    }
    if (ret < 0) {
        return ret;
    }
    qemu_put_byte(f, HANDOFF_BLOCK_END);
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    trace_free_final(s);
    handoff_save_update_stats(s);
    handoff_encoder_stats(s->enc, &st);
    trace_handoff_save_complete(st.output_bytes, st.frames);
    return 0;
}
