/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Sending a round of an outgoing handoff (handoff-save.c): its memory
 * pages and disk chunks offered to the engine, free memory as zero runs,
 * and the engine's stream carried into the migration stream, in every
 * section part as blocks of
 *   u8 HANDOFF_BLOCK_DATA, be32 length, bytes of the engine's stream
 * (handoff-stream.h).
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "exec/ram_addr.h"
#include "exec/ramblock.h"
#include "io/channel-socket.h"
#include "io/channel-tls.h"
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include "qapi/error.h"
#include "qemu-file.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "sysemu/block-backend.h"
#include "handoff-save.h"
#include "handoff-stream.h"
#include "trim_map.h"
#include "trace.h"

/*
 * Bytes written to the socket that have not left this host yet. On a slow
 * link the kernel's send buffer holds seconds of data: counting it as sent
 * would inflate the bandwidth the controller sees and hide data the
 * destination still waits for at switch-over.
 */
uint64_t handoff_save_socket_backlog(QEMUFile *f)
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
    uint64_t backlog = MIN(handoff_save_socket_backlog(f), written);

    handoff_encoder_report_link(s->enc, written - backlog, backlog,
                                qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
}

/* Moves whatever the engine has encoded into @f; with @wait, everything. */
int handoff_save_drain_encoder(HandoffSaveState *s, QEMUFile *f, bool wait)
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

/* Fails @f with the engine's error @rc, reported here once. */
int handoff_save_engine_failed(QEMUFile *f, int rc, const char *what)
{
    Error *err = NULL;

    handoff_error_engine(&err, rc, what);
    error_report_err(error_copy(err));
    qemu_file_set_error_obj(f, -EIO, err);
    return -EIO;
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
                return handoff_save_engine_failed(f, rc, "handoff encoder");
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
void handoff_save_clear_dirty_log(RAMBlock *rb, uint64_t page)
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
            return handoff_save_engine_failed(f, rc, "handoff encoder");
        }
        i += len;
    }
    return 0;
}

static HandoffBlock *block_of_region(HandoffSaveState *s, uint32_t region)
{
    size_t i;

    for (i = 0; i < s->n_blocks; i++) {
        if (s->blocks[i].region == region) {
            return &s->blocks[i];
        }
    }
    return NULL;
}

/* One memory chunk of the round, unless it went already (as free, or it
 * was listed twice: carried and dirtied). */
static int send_memory_chunk(HandoffSaveState *s, QEMUFile *f,
                             const HandoffItem *it)
{
    HandoffBlock *b = block_of_region(s, it->region);
    int rc;

    assert(b);
    if (!test_and_clear_bit(it->index, b->pending)) {
        s->round_freed -= !!s->round_freed;
        return 0;
    }
    handoff_save_clear_dirty_log(b->rb, it->index / CHUNKS_PER_PAGE);
    clear_bit(it->index, b->sent_free);
    rc = handoff_encoder_submit(s->enc, it->region, it->index,
                                b->rb->host + it->index * HANDOFF_CHUNK_SIZE);
    if (rc < 0) {
        return handoff_save_engine_failed(f, rc, "handoff encoder");
    }
    s->memory_sent++;
    return 0;
}

/* How many chunks from s->next on are a run of @it's disk (read with one
 * request). */
static size_t disk_run_length(HandoffSaveState *s, const HandoffItem *it)
{
    HandoffItem *items = (HandoffItem *)s->round->data;
    size_t n = 1;

    while (s->next + n < s->round->len && n < DISK_RUN_CHUNKS &&
           items[s->next + n].region == it->region &&
           items[s->next + n].index == it->index + n) {
        n++;
    }
    return n;
}

/*
 * Offers chunks of the round until @deadline (0: all of them) or the rate
 * limit. @bql: the caller holds the BQL (disk reads need it).
 */
int handoff_save_send_round(HandoffSaveState *s, QEMUFile *f,
                            int64_t deadline, bool bql)
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
            s->next++;
            rc = send_memory_chunk(s, f, it);
        } else {
            size_t n = disk_run_length(s, it);

            rc = send_disk_run(s, f, disk, it->index, n, bql);
            if (rc == 0) {
                s->disk_sent += n;
                s->next += n;
            }
        }
        if (rc < 0) {
            return rc;
        }
        /* Keep the link busy while the engine's workers compress. */
        if (++since_drain >= 64) {
            since_drain = 0;
            if (apply_free_report(s, f) < 0 ||
                handoff_save_drain_encoder(s, f, false) < 0) {
                return -EIO;
            }
        }
    }
    return handoff_save_drain_encoder(s, f, false);
}
