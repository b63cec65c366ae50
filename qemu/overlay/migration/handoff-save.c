/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The "handoff" savevm section, source side: feeds the VM's memory pages
 * and disk chunks to the handoff engine and writes the engine's stream
 * into the migration stream.
 *
 * Rounds follow precopy: round 0 offers every RAM page and every chunk the
 * disk overlay has allocated (the engine sends nothing for those still
 * equal to the base); each later round offers what the dirty logs caught
 * since the previous one. Switch-over happens, as for RAM, when the
 * estimated rest fits the downtime limit. This file owns the migration
 * dirty log while handoff runs ("ram" is inactive then).
 *
 * Stream carriage, in every section part: blocks of
 *   u8 HANDOFF_BLOCK_DATA, be32 length, bytes of the engine's stream
 * then u8 HANDOFF_BLOCK_END after the engine's end record (last part
 * only), and u8 HANDOFF_BLOCK_EOS closing the part.
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "block/block_int-global-state.h"
#include "block/dirty-bitmap.h"
#include "exec/ram_addr.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "migration/handoff.h"
#include "migration/misc.h"
#include "migration/register.h"
#include "qapi/error.h"
#include "qemu-file.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "io/channel-socket.h"
#include "io/channel-tls.h"
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include "qemu/rcu.h"
#include "ram.h"
#include "sysemu/block-backend.h"
#include "sysemu/cpu-throttle.h"
#include "sysemu/tcg.h"
#include "handoff-internal.h"
#include "handoff-stream.h"
#include "trim_map.h"
#include "trace.h"

/* Work done per call of save_live_iterate before yielding to the core. */
#define ITERATE_BUDGET_NS (50 * SCALE_MS)
/* Disk chunks read with one request. */
#define DISK_RUN_CHUNKS 256
/* After this many rounds the rest goes in the downtime, whatever its size. */
#define MAX_ROUNDS 100

QEMU_BUILD_BUG_ON(TARGET_PAGE_SIZE % HANDOFF_CHUNK_SIZE);
#define CHUNKS_PER_PAGE (TARGET_PAGE_SIZE / HANDOFF_CHUNK_SIZE)

typedef struct HandoffBlock {
    RAMBlock *rb;
    uint32_t region;
    uint64_t pages;
    /*
     * Chunks of the round not offered yet. The guest agent's report takes
     * free ones out (sent as zeros); an item whose bit is clear is skipped.
     */
    unsigned long *pending;
    /*
     * Chunks whose last copy sent was a zero run for free memory (set by
     * a report, cleared when the chunk goes again as data): at the end,
     * exactly where the destination may hold zeros for the source's stale
     * bytes (trace handoff_save_free_final). A page sent free and written
     * afterwards is not among them: its write must have arrived.
     */
    unsigned long *sent_free;
} HandoffBlock;

/* One chunk to offer the engine: region and chunk index. */
typedef struct HandoffItem {
    uint32_t region;
    uint64_t index;
} HandoffItem;

typedef struct HandoffSaveState {
    HandoffBaseStore *store;
    HandoffEncoder *enc;
    bool random_order;

    HandoffBlock *blocks;
    size_t n_blocks;

    HandoffDisks *disks;        /* [0] the base disk's overlay */
    BdrvDirtyBitmap **disk_dirty;   /* per disk */
    TrimMap *trim;              /* discards on disk [0] since the start */
    bool *disk_zero;            /* per chunk of disk_buf: reads as zeros */

    /* The round being sent: memory items (maybe shuffled), then disk. */
    GArray *round;
    size_t next;
    uint32_t iteration;
    uint64_t memory_sent, disk_sent;    /* chunks offered this round */

    /* The guest agent: the generation asked for (0: none). */
    uint64_t generation;
    uint64_t round_freed;       /* chunks taken out of the round ahead */
    uint64_t free_bytes;        /* guest memory sent as free, in all */
    uint64_t hinted_bytes;      /* of which virtio-balloon hinted */
    uint64_t agent_reports, agent_refused;  /* counters at the start */

    /* Throttling: dirtied vs sent since the previous round. */
    uint64_t bytes_at_round;
    int dirty_high;

    uint8_t *out;
    uint8_t *disk_buf;
    HandoffStats stats;
} HandoffSaveState;

static HandoffSaveState *save_state;

/* --- stream carriage ----------------------------------------------------- */

/*
 * Bytes written to the socket that have not left this host yet. On a slow
 * link the kernel's send buffer holds seconds of data: counting it as sent
 * would inflate the bandwidth the controller sees and hide data the
 * destination still waits for at switch-over.
 */
static uint64_t socket_backlog(QEMUFile *f)
{
    QIOChannel *ioc = qemu_file_get_ioc(f);
    QIOChannelSocket *sioc;
    int queued;

    /* Under TLS the socket is the channel's master. */
    if (object_dynamic_cast(OBJECT(ioc), TYPE_QIO_CHANNEL_TLS)) {
        ioc = QIO_CHANNEL_TLS(ioc)->master;
    }
    sioc = (QIOChannelSocket *)object_dynamic_cast(OBJECT(ioc),
                                                  TYPE_QIO_CHANNEL_SOCKET);
    if (!sioc || ioctl(sioc->fd, SIOCOUTQ, &queued) < 0 || queued < 0) {
        return 0;
    }
    return queued;
}

/* Tells the engine what has left this host and what still waits. */
static void report_link(HandoffSaveState *s, QEMUFile *f)
{
    uint64_t written = qemu_file_total_transferred_fast(f);
    uint64_t backlog = MIN(socket_backlog(f), written);

    handoff_encoder_report_link(s->enc, written - backlog, backlog,
                                qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
}

/* Moves whatever the engine has encoded into @f; with @wait, everything. */
static int drain_encoder(HandoffSaveState *s, QEMUFile *f, bool wait)
{
    for (;;) {
        size_t produced = 0;
        int rc = wait ? handoff_encoder_pull_wait(s->enc, s->out,
                                                  HANDOFF_BLOCK_MAX, &produced)
                      : handoff_encoder_pull(s->enc, s->out,
                                             HANDOFF_BLOCK_MAX, &produced);

        if (rc < 0) {
            Error *err = NULL;

            handoff_error_engine(&err, rc, "handoff encoder");
            qemu_file_set_error_obj(f, -EIO, err);
            return -EIO;
        }
        if (produced == 0) {
            return 0;
        }
        qemu_put_byte(f, HANDOFF_BLOCK_DATA);
        qemu_put_be32(f, produced);
        qemu_put_buffer(f, s->out, produced);
        report_link(s, f);
        if (!wait) {
            return 0;
        }
    }
}

static int engine_failed(QEMUFile *f, int rc, const char *what)
{
    Error *err = NULL;

    handoff_error_engine(&err, rc, what);
    error_report_err(error_copy(err));
    qemu_file_set_error_obj(f, -EIO, err);
    return -EIO;
}

/* --- rounds -------------------------------------------------------------- */

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
 * Called with the BQL: moves both dirty logs into a new round. Chunks the
 * previous round had not offered yet stay in it, ahead of the new ones (a
 * round may end early when the rest is estimated to fit the downtime).
 */
static void start_round(HandoffSaveState *s)
{
    uint64_t dirty_pages = 0, dirty_disk = 0;
    Error *err = NULL;
    size_t i, carried;

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
                bitmap_set(b->pending, page * CHUNKS_PER_PAGE,
                           CHUNKS_PER_PAGE);
                dirty_pages++;
            }
            bitmap_zero(b->rb->bmap, b->pages);
        }
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

    /* Disk chunks stay in offset order: they are read in runs. */
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
    trace_handoff_save_round(s->iteration, dirty_pages, dirty_disk);
}

static void clear_dirty_log(RAMBlock *rb, uint64_t page);

/*
 * With the BQL, right after a round's sync: asks the guest agent which
 * memory is free. The safety rule (docs/guest-agent.md): the guest takes
 * its list at some instant T after this request, so after the sync; a
 * page it reports and writes after T must reach the dirty log and go out
 * in the next round. TCG marks such a write (the sync reset the TLB's
 * dirty state). KVM with manual dirty-log protect leaves every page the
 * sync fetched writable and unlogged until its log is cleared, which
 * send_round does page by page as it reads them: a page reported free,
 * then written before its clear, would lose that write. So the log of
 * everything the sync fetched is cleared here, before the guest is asked,
 * as ram.c clears the whole log when it has no clear_bmap (and, for
 * balloon hints, clears each hinted range). Only when something may
 * report: on a large KVM guest the clear is a stall.
 */
static void request_free_memory(HandoffSaveState *s)
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
            clear_dirty_log(rb, page);
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

static HandoffBlock *find_block(HandoffSaveState *s, RAMBlock *rb)
{
    size_t i;

    for (i = 0; i < s->n_blocks; i++) {
        if (s->blocks[i].rb == rb) {
            return &s->blocks[i];
        }
    }
    return NULL;
}

/*
 * Takes what the agent reported free out of the round and sends it as
 * zero runs. Only chunks of this round not offered yet: a free page the
 * round does not hold went out earlier and was not written since; one
 * already offered went with what it held then. Zeros, not nothing: the
 * destination's page would otherwise keep the base's content, and the
 * stream would not say what the destination holds.
 */
static int apply_free_extents(HandoffSaveState *s, QEMUFile *f,
                              GArray *report, uint64_t *bytes)
{
    guint i;
    int rc;

    for (i = 0; report && i < report->len; i++) {
        HandoffFreeExtent *e = &g_array_index(report, HandoffFreeExtent, i);
        HandoffBlock *b = find_block(s, e->rb);
        uint64_t chunks, first, end, run;

        if (!b) {
            continue;       /* RAM that does not migrate */
        }
        chunks = b->pages * CHUNKS_PER_PAGE;
        first = MIN(e->offset / HANDOFF_CHUNK_SIZE, chunks);
        end = MIN((e->offset + e->bytes) / HANDOFF_CHUNK_SIZE, chunks);
        for (first = find_next_bit(b->pending, end, first); first < end;
             first = find_next_bit(b->pending, end, first + run)) {
            run = find_next_zero_bit(b->pending, end, first) - first;
            bitmap_clear(b->pending, first, run);
            bitmap_set(b->sent_free, first, run);
            trace_handoff_save_free_run(qemu_ram_get_idstr(b->rb),
                                        first * HANDOFF_CHUNK_SIZE,
                                        run * HANDOFF_CHUNK_SIZE);
            rc = handoff_encoder_submit_zero_run(s->enc, b->region, first,
                                                 run);
            if (rc < 0) {
                return engine_failed(f, rc, "handoff encoder");
            }
            s->round_freed += run;
            *bytes += run * HANDOFF_CHUNK_SIZE;
        }
    }
    return 0;
}

/* The agent's report and the balloon's hints for this round, if any. */
static int apply_free_report(HandoffSaveState *s, QEMUFile *f)
{
    g_autoptr(GArray) report = NULL;
    g_autoptr(GArray) hints = NULL;
    uint64_t hinted = 0;
    int rc;

    if (!s->generation) {
        return 0;
    }
    report = handoff_agent_take_report(s->generation);
    hints = handoff_hints_take(s->generation);
    rc = apply_free_extents(s, f, report, &s->free_bytes);
    if (rc == 0) {
        rc = apply_free_extents(s, f, hints, &hinted);
        s->free_bytes += hinted;
        s->hinted_bytes += hinted;
    }
    return rc;
}

static void next_round(HandoffSaveState *s, QEMUFile *f)
{
    MigrationState *ms = migrate_get_current();
    uint64_t sent = qemu_file_total_transferred_fast(f) - s->bytes_at_round;
    uint64_t dirtied;

    s->iteration++;
    handoff_encoder_begin_iteration(s->enc, s->iteration);
    start_round(s);
    request_free_memory(s);

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
 * KVM dirty logging, as ram.c does it (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
 * QEMU's default when the kernel has it): a sync fetches the log but
 * leaves dirty pages writable and unlogged; they are write-protected
 * again only when QEMU clears them. The sync records what it fetched in
 * rb->clear_bmap, one bit per 2^clear_bmap_shift pages, and the log of
 * such a stretch is cleared just before its first page is read. The
 * clear covers only the pages the last sync fetched
 * (kvm_log_clear_one_slot), so a write after the sync stays logged for
 * the next round; a write between sync and clear lands before we read
 * the page. Without clear_bmap the sync would clear the whole block at
 * once (memory_region_clear_dirty_bitmap's slow path): correct, but a
 * stall on large guests. Under TCG the clear is a no-op: no listener has
 * log_clear.
 */
static void clear_dirty_log(RAMBlock *rb, uint64_t page)
{
    hwaddr size, start;

    if (!rb->clear_bmap || !clear_bmap_test_and_clear(rb, page)) {
        return;
    }
    size = 1ULL << (TARGET_PAGE_BITS + rb->clear_bmap_shift);
    start = QEMU_ALIGN_DOWN((ram_addr_t)page << TARGET_PAGE_BITS, size);
    trace_handoff_save_clear_log(rb->idstr, start, size);
    memory_region_clear_dirty_bitmap(rb->mr, start, size);
}

/* Whether @d's trim map names any chunk of [first, first + n). */
static bool trim_names(HandoffSaveState *s, HandoffDisk *d, uint64_t first,
                       size_t n)
{
    uint64_t run_first, run_count;

    return d->is_base &&
           trim_map_next_run(s->trim, first, HANDOFF_CHUNK_SIZE, &run_first,
                             &run_count) == 1 && run_first < first + n;
}

/*
 * Marks in s->disk_zero which of chunks [first, first + n) read as zeros,
 * as the block layer says: a range the guest discarded (the trim map
 * names it, or the overlay holds zero clusters from discards before the
 * handoff) is sent as a zero run, never skipped, since the destination
 * must read zeros there too, not the base. Asked in every round: round 0
 * may end early, and the chunks it had not reached, carried into later
 * rounds, are those the map knows nothing of. Only whole chunks count.
 * Chunks the map named that are not zero were written since (or the
 * discard covered part of a cluster): the map forgets them.
 */
static int find_zero_chunks(HandoffSaveState *s, HandoffDisk *d,
                            uint64_t first, size_t n)
{
    BlockDriverState *bs = blk_bs(d->blk);
    bool named = trim_names(s, d, first, n);
    size_t i = 0;

    memset(s->disk_zero, 0, n * sizeof(bool));
    while (i < n) {
        int64_t pnum = 0;
        uint64_t whole;
        int ret = bdrv_block_status_above(bs, NULL,
                                          (first + i) * HANDOFF_CHUNK_SIZE,
                                          (n - i) * HANDOFF_CHUNK_SIZE,
                                          &pnum, NULL, NULL);

        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0) {
            break;
        }
        whole = pnum / HANDOFF_CHUNK_SIZE;
        if ((ret & BDRV_BLOCK_ZERO) && whole) {
            memset(s->disk_zero + i, 1, whole * sizeof(bool));
            i += whole;
            continue;
        }
        whole = DIV_ROUND_UP(pnum, HANDOFF_CHUNK_SIZE);
        if (named) {
            trim_map_write(s->trim, (first + i) * HANDOFF_CHUNK_SIZE,
                           whole * HANDOFF_CHUNK_SIZE);
        }
        i += whole;
    }
    return 0;
}

/* Reads the chunks of [first, first + n) that are not zero into disk_buf. */
static int read_disk_chunks(HandoffSaveState *s, HandoffDisk *d,
                            uint64_t first, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t len = 0;
        int ret;

        if (s->disk_zero[i]) {
            i++;
            continue;
        }
        while (i + len < n && !s->disk_zero[i + len]) {
            len++;
        }
        ret = blk_pread(d->blk, (first + i) * HANDOFF_CHUNK_SIZE,
                        len * HANDOFF_CHUNK_SIZE,
                        s->disk_buf + i * HANDOFF_CHUNK_SIZE, 0);
        if (ret < 0) {
            return ret;
        }
        i += len;
    }
    return 0;
}

/* Offers disk chunks [first, first + n): zero runs and chunks read. */
static int send_disk_run(HandoffSaveState *s, QEMUFile *f, HandoffDisk *d,
                         uint64_t first, size_t n, bool bql)
{
    size_t i = 0;
    int ret, rc;

    if (!bql) {
        qemu_mutex_lock_iothread();
    }
    ret = find_zero_chunks(s, d, first, n);
    if (ret == 0) {
        ret = read_disk_chunks(s, d, first, n);
    }
    if (!bql) {
        qemu_mutex_unlock_iothread();
    }
    if (ret < 0) {
        error_report("handoff: cannot read disk '%s': %s",
                     blk_name(d->blk), strerror(-ret));
        qemu_file_set_error(f, ret);
        return ret;
    }
    while (i < n) {
        size_t len = 1;

        if (s->disk_zero[i]) {
            while (i + len < n && s->disk_zero[i + len]) {
                len++;
            }
            trace_handoff_save_zero_run(first + i, len);
            rc = handoff_encoder_submit_zero_run(s->enc, d->region, first + i,
                                                 len);
        } else {
            rc = handoff_encoder_submit(s->enc, d->region, first + i,
                                        s->disk_buf + i * HANDOFF_CHUNK_SIZE);
        }
        if (rc < 0) {
            return engine_failed(f, rc, "handoff encoder");
        }
        i += len;
    }
    return 0;
}

/*
 * Offers chunks of the round until @deadline (0: all of them) or the rate
 * limit. @bql: the caller holds the BQL (disk reads need it).
 */
static int send_round(HandoffSaveState *s, QEMUFile *f, int64_t deadline,
                      bool bql)
{
    HandoffItem *items = (HandoffItem *)s->round->data;
    unsigned since_drain = 0;
    int rc;

    while (s->next < s->round->len) {
        HandoffItem *it = &items[s->next];
        HandoffDisk *disk = handoff_disks_find(s->disks, it->region);

        if (deadline && (qemu_file_rate_limit(f) ||
                         qemu_clock_get_ns(QEMU_CLOCK_REALTIME) > deadline)) {
            break;
        }
        if (!disk) {
            HandoffBlock *b = NULL;
            size_t i;

            for (i = 0; i < s->n_blocks; i++) {
                if (s->blocks[i].region == it->region) {
                    b = &s->blocks[i];
                    break;
                }
            }
            assert(b);
            s->next++;
            if (!test_and_clear_bit(it->index, b->pending)) {
                /* Sent as free, or listed twice (carried and dirtied). */
                s->round_freed -= !!s->round_freed;
                continue;
            }
            clear_dirty_log(b->rb, it->index / CHUNKS_PER_PAGE);
            clear_bit(it->index, b->sent_free);
            rc = handoff_encoder_submit(s->enc, it->region, it->index,
                                        b->rb->host +
                                        it->index * HANDOFF_CHUNK_SIZE);
            if (rc < 0) {
                return engine_failed(f, rc, "handoff encoder");
            }
            s->memory_sent++;
        } else {
            /* A run of consecutive chunks, read with one request. */
            size_t n = 1;

            while (s->next + n < s->round->len && n < DISK_RUN_CHUNKS &&
                   items[s->next + n].region == it->region &&
                   items[s->next + n].index == it->index + n) {
                n++;
            }
            rc = send_disk_run(s, f, disk, it->index, n, bql);
            if (rc < 0) {
                return rc;
            }
            s->disk_sent += n;
            s->next += n;
        }
        /* Keep the link busy while the engine's workers compress. */
        if (++since_drain >= 64) {
            since_drain = 0;
            if (apply_free_report(s, f) < 0 ||
                drain_encoder(s, f, false) < 0) {
                return -EIO;
            }
        }
    }
    return drain_encoder(s, f, false);
}

/* --- statistics ---------------------------------------------------------- */

/* What the destination still waits for: the engine's estimate for the
 * round's rest, plus our bytes queued in the socket. */
static uint64_t remaining_bytes(HandoffSaveState *s, QEMUFile *f,
                                const HandoffEncoderStats *st)
{
    return handoff_encoder_remaining_bytes(st, s->round->len - s->next -
                                               MIN(s->round_freed,
                                                   s->round->len - s->next)) +
           (f ? socket_backlog(f) : 0);
}

static void update_stats(HandoffSaveState *s)
{
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    HandoffStats *o = &s->stats;
    uint64_t examined = 0;
    char mode[32];
    int k;

    if (handoff_encoder_stats(s->enc, &st) < 0) {
        return;
    }
    for (k = 0; k < HANDOFF_REC_KINDS; k++) {
        examined += st.chunks[k];
    }
    examined -= st.chunks[HANDOFF_REC_ZERO_RUN];
    if (handoff_mode_name(&st.mode, mode, sizeof(mode)) < 0) {
        pstrcpy(mode, sizeof(mode), "?");
    }
    g_free(o->base_id);
    g_free(o->mode);
    o->base_id = g_strdup(s->store->id);
    o->iteration = s->iteration;
    o->zero = st.chunks[HANDOFF_REC_ZERO];
    o->same = st.chunks[HANDOFF_REC_SAME];
    o->base_ref = st.chunks[HANDOFF_REC_BASE_REF];
    o->self_ref = st.chunks[HANDOFF_REC_SELF_REF];
    o->data = st.chunks[HANDOFF_REC_DATA];
    o->zero_run = st.chunks[HANDOFF_REC_ZERO_RUN];
    o->discarded = handoff_trim_discarded_bytes(s->trim);
    o->free_memory = s->free_bytes;
    o->free_hinted = s->hinted_bytes;
    handoff_agent_counters(&o->agent_reports, &o->agent_refused);
    o->agent_reports -= s->agent_reports;
    o->agent_refused -= s->agent_refused;
    o->xor_delta = st.xor_chunks;
    o->dedup_rate = examined ? 1.0 - (double)o->data / examined : 0;
    o->input_bytes = st.input_bytes;
    o->output_bytes = st.output_bytes;
    o->frames = st.frames;
    o->ratio = st.ratio;
    o->mode = g_strdup(mode);
    o->mode_switches = st.mode_switches;
    o->bandwidth = st.bandwidth_bps;
    o->predicted_throughput = st.predicted_bps;
    o->remaining = remaining_bytes(s, NULL, &st);
    o->memory_chunks = s->memory_sent;
    o->disk_chunks = s->disk_sent;
    handoff_stats_publish(o);
}

/* --- SaveVMHandlers ------------------------------------------------------ */

static bool handoff_is_active(void *opaque)
{
    return migrate_use_handoff();
}

static bool setup_blocks(HandoffSaveState *s, Error **errp)
{
    uint8_t shift = MIN(MAX(migrate_get_current()->clear_bitmap_shift,
                            CLEAR_BITMAP_SHIFT_MIN), CLEAR_BITMAP_SHIFT_MAX);
    RAMBlock *rb;
    size_t n = 0, i;

    if (!handoff_base_check_ram(s->store, errp)) {
        return false;
    }
    s->blocks = g_new0(HandoffBlock, s->store->n_memory);
    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        HandoffBlock *b = &s->blocks[n++];

        b->rb = rb;
        b->pages = qemu_ram_get_used_length(rb) >> TARGET_PAGE_BITS;
        for (i = 0; i < s->store->n_memory; i++) {
            if (!strcmp(s->store->memory[i].name, qemu_ram_get_idstr(rb))) {
                b->region = s->store->memory[i].region;
            }
        }
        /* Every page is offered in round 0. */
        g_free(rb->bmap);
        rb->bmap = bitmap_new(b->pages);
        bitmap_set(rb->bmap, 0, b->pages);
        g_free(rb->clear_bmap);
        rb->clear_bmap_shift = shift;
        rb->clear_bmap = bitmap_new(clear_bmap_size(b->pages, shift));
        b->pending = bitmap_new(b->pages * CHUNKS_PER_PAGE);
        b->sent_free = bitmap_new(b->pages * CHUNKS_PER_PAGE);
    }
    s->n_blocks = n;
    return true;
}

/*
 * Marks what disk @i holds: round 0 offers exactly that. For the overlay
 * on the base, its allocated clusters (the rest reads as the base); for a
 * carried extra disk, everything that does not read as zeros through its
 * whole backing chain, since the destination starts from an empty image.
 */
static bool setup_disk(HandoffSaveState *s, size_t i, Error **errp)
{
    HandoffDisk *d = &s->disks->disk[i];
    BlockDriverState *bs = blk_bs(d->blk);
    int64_t off, size = d->size;

    handoff_trim_warn_if_ignored(d->blk);
    /* Created first, so writes during the scan below are not missed. */
    s->disk_dirty[i] = bdrv_create_dirty_bitmap(bs, HANDOFF_CHUNK_SIZE, NULL,
                                                errp);
    if (!s->disk_dirty[i]) {
        return false;
    }
    for (off = 0; off < size;) {
        int64_t pnum = 0;
        int ret = d->is_base
                  ? bdrv_is_allocated(bs, off, size - off, &pnum)
                  : bdrv_block_status_above(bs, NULL, off, size - off, &pnum,
                                            NULL, NULL);
        bool offer = d->is_base ? ret > 0 : !(ret & BDRV_BLOCK_ZERO);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read the allocation map of "
                             "disk '%s'", blk_name(d->blk));
            return false;
        }
        if (pnum <= 0) {
            break;
        }
        if (offer) {
            bdrv_set_dirty_bitmap(s->disk_dirty[i], off, pnum);
        }
        off += pnum;
    }
    return true;
}

/*
 * The disks the handoff carries (handoff-disks.c): any writable disk it
 * cannot carry or name is refused before anything moves.
 */
static bool setup_disks(HandoffSaveState *s, Error **errp)
{
    size_t i;

    s->disks = handoff_disks_collect(s->store, errp);
    if (!s->disks) {
        return false;
    }
    s->disk_dirty = g_new0(BdrvDirtyBitmap *, s->disks->n);
    s->trim = handoff_trim_start(s->disks->disk[0].blk,
                                 s->disks->disk[0].size, errp);
    if (!s->trim) {
        return false;
    }
    for (i = 0; i < s->disks->n; i++) {
        if (!setup_disk(s, i, errp)) {
            return false;
        }
    }
    s->disk_buf = qemu_blockalign(blk_bs(s->disks->disk[0].blk),
                                  DISK_RUN_CHUNKS * HANDOFF_CHUNK_SIZE);
    s->disk_zero = g_new0(bool, DISK_RUN_CHUNKS);
    return true;
}

static HandoffEncoder *create_encoder(HandoffSaveState *s, Error **errp)
{
    MigrationState *ms = migrate_get_current();
    HandoffEncoderConfig config = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    int rc;

    /*
     * "auto" or the mode with handoff-delta: the engine's policy decides
     * auto's start, whether a fixed mode gets XOR, and refuses a mode
     * naming a delta when deltas are off.
     */
    handoff_encoder_config_default(&config);
    rc = handoff_encoder_config_set_compression(
        &config, ms->parameters.handoff_compression,
        ms->parameters.handoff_delta ? HANDOFF_DELTAS_ON : HANDOFF_DELTAS_OFF);
    if (rc < 0) {
        handoff_error_engine(errp, rc, "cannot start the handoff encoder");
        return NULL;
    }
    config.threads = ms->parameters.handoff_workers;
    config.seed = g_get_real_time();
    s->stats.adaptive = config.adaptive;
    rc = handoff_encoder_create(s->disks->base, &config, &enc);
    if (rc < 0) {
        handoff_error_engine(errp, rc, "cannot start the handoff encoder");
        return NULL;
    }
    return enc;
}

static int handoff_save_setup_locked(QEMUFile *f);

static void handoff_save_cleanup(void *opaque)
{
    HandoffSaveState *s = save_state;
    size_t i;

    if (!s) {
        return;
    }
    handoff_agent_forget();
    handoff_hints_stop();
    if (global_dirty_tracking & GLOBAL_DIRTY_MIGRATION) {
        memory_global_dirty_log_stop(GLOBAL_DIRTY_MIGRATION);
    }
    WITH_RCU_READ_LOCK_GUARD() {
        for (i = 0; i < s->n_blocks; i++) {
            g_free(s->blocks[i].rb->bmap);
            s->blocks[i].rb->bmap = NULL;
            g_free(s->blocks[i].rb->clear_bmap);
            s->blocks[i].rb->clear_bmap = NULL;
            g_free(s->blocks[i].pending);
            g_free(s->blocks[i].sent_free);
        }
    }
    if (cpu_throttle_active()) {
        cpu_throttle_stop();
    }
    if (s->enc) {
        update_stats(s);
        handoff_encoder_free(s->enc);
    }
    for (i = 0; s->disk_dirty && i < s->disks->n; i++) {
        if (s->disk_dirty[i]) {
            bdrv_release_dirty_bitmap(s->disk_dirty[i]);
        }
    }
    g_free(s->disk_dirty);
    if (s->trim) {
        handoff_trim_stop();
    }
    qemu_vfree(s->disk_buf);
    g_free(s->disk_zero);
    g_free(s->out);
    g_free(s->blocks);
    if (s->round) {
        g_array_free(s->round, true);
    }
    handoff_disks_free(s->disks);
    handoff_base_store_free(s->store);
    g_free(s->stats.base_id);
    g_free(s->stats.mode);
    g_free(s);
    save_state = NULL;
}

/*
 * Without the BQL (7.2 calls setup handlers unlocked). The base is opened
 * before the BQL is taken: on its first use in this process it is
 * re-hashed, which must not stall the guest.
 */
static int handoff_save_setup(QEMUFile *f, void *opaque)
{
    MigrationState *ms = migrate_get_current();
    const char *dir = ms->parameters.handoff_base;
    HandoffSaveState *s;
    Error *err = NULL;
    int ret;

    if (!dir || !*dir) {
        error_setg(&err, "Handoff needs a base: set migration parameter "
                   "handoff-base (or use migrate-handoff base=DIR)");
        goto fail;
    }
    s = save_state = g_new0(HandoffSaveState, 1);
    s->store = handoff_base_store_open(dir, &err);
    if (!s->store) {
        goto fail;
    }
    qemu_mutex_lock_iothread();
    ret = handoff_save_setup_locked(f);
    qemu_mutex_unlock_iothread();
    return ret;

fail:
    error_prepend(&err, "handoff: ");
    error_report_err(error_copy(err));
    qemu_file_set_error_obj(f, -EINVAL, err);
    return -EINVAL;
}

static int handoff_save_setup_locked(QEMUFile *f)
{
    MigrationState *ms = migrate_get_current();
    HandoffSaveState *s = save_state;
    Error *err = NULL;

    s->round = g_array_new(false, false, sizeof(HandoffItem));
    s->out = g_malloc(HANDOFF_BLOCK_MAX);
    s->random_order = ms->parameters.handoff_random_order;
    if (!setup_blocks(s, &err) || !setup_disks(s, &err)) {
        goto fail;
    }
    s->enc = create_encoder(s, &err);
    if (!s->enc) {
        goto fail;
    }
    memory_global_dirty_log_start(GLOBAL_DIRTY_MIGRATION);
    handoff_agent_counters(&s->agent_reports, &s->agent_refused);
    start_round(s);
    request_free_memory(s);
    trace_handoff_save_setup(s->store->dir, s->round->len);
    s->bytes_at_round = qemu_file_total_transferred_fast(f);
    /* The stream header (base ID first) goes out before any bulk data. */
    if (drain_encoder(s, f, false) < 0) {
        return -EIO;
    }
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    update_stats(s);
    return 0;

fail:
    error_prepend(&err, "handoff: ");
    error_report_err(error_copy(err));
    qemu_file_set_error_obj(f, -EINVAL, err);
    return -EINVAL;
}

/* Without the BQL. Returns 1 when the round has been offered entirely. */
static int handoff_save_iterate(QEMUFile *f, void *opaque)
{
    HandoffSaveState *s = save_state;
    int ret;

    if (!s || !s->enc) {
        return -EINVAL;
    }
    if (s->next >= s->round->len) {
        /* Nothing dirty yet: let the link drain rather than spin. */
        g_usleep(10 * 1000);
    }
    ret = send_round(s, f, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                           ITERATE_BUDGET_NS, false);
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    update_stats(s);
    if (ret < 0) {
        return ret;
    }
    return s->next >= s->round->len;
}

static void handoff_save_pending(QEMUFile *f, void *opaque,
                                 uint64_t threshold,
                                 uint64_t *res_precopy_only,
                                 uint64_t *res_compatible,
                                 uint64_t *res_postcopy_only)
{
    HandoffSaveState *s = save_state;
    MigrationState *ms = migrate_get_current();
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    uint64_t remaining, fits;

    /* The core stops before asking when setup failed; be sure anyway. */
    if (!s || !s->enc || handoff_encoder_stats(s->enc, &st) < 0) {
        return;
    }
    /*
     * What fits the downtime. The core's @threshold comes from the rate of
     * writes into the socket, which a send buffer of seconds makes far
     * higher than the link's in bursts; the engine's estimate is what the
     * link carried. The lower of the two decides.
     */
    fits = threshold;
    if (st.bandwidth_bps > 0) {
        fits = MIN(fits, st.bandwidth_bps * ms->parameters.downtime_limit /
                         1000);
    }
    remaining = remaining_bytes(s, f, &st);
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
        remaining = remaining_bytes(s, f, &st);
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
static int handoff_save_complete(QEMUFile *f, void *opaque)
{
    HandoffSaveState *s = save_state;
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    int ret, rc;

    Error *err = NULL;

    /* No report applies to the stopped round: its list is final. */
    handoff_agent_forget();
    s->generation = 0;
    s->iteration++;
    handoff_encoder_begin_iteration(s->enc, s->iteration);
    start_round(s);
    /* With the VM stopped, the balloon tells the guest hinting is done. */
    if (precopy_notify(PRECOPY_NOTIFY_AFTER_BITMAP_SYNC, &err)) {
        error_report_err(err);
    }
    ret = send_round(s, f, 0, true);
    if (ret == 0) {
        rc = handoff_encoder_finish(s->enc);
        ret = rc < 0 ? engine_failed(f, rc, "handoff encoder")
                     : drain_encoder(s, f, true);
    }
    if (ret < 0) {
        return ret;
    }
    qemu_put_byte(f, HANDOFF_BLOCK_END);
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    trace_free_final(s);
    update_stats(s);
    handoff_encoder_stats(s->enc, &st);
    trace_handoff_save_complete(st.output_bytes, st.frames);
    return 0;
}

static SaveVMHandlers savevm_handoff_handlers = {
    .is_active = handoff_is_active,
    .save_setup = handoff_save_setup,
    .save_live_iterate = handoff_save_iterate,
    .save_live_pending = handoff_save_pending,
    .save_live_complete_precopy = handoff_save_complete,
    .save_cleanup = handoff_save_cleanup,
    .load_setup = handoff_load_setup,
    .load_state = handoff_load_state,
    .load_cleanup = handoff_load_cleanup,
};

void handoff_mig_init(void)
{
    handoff_trim_init();
    register_savevm_live("handoff", 0, HANDOFF_SECTION_VERSION,
                         &savevm_handoff_handlers, NULL);
}
