/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The "handoff" savevm section, destination side: RAM starts as the base's
 * memory, the disk as a fresh overlay on the base's disk, and the engine's
 * decoder applies records to both as the stream arrives.
 *
 * Every length read here is checked before use, and every engine error
 * names its cause: a wrong base, a corrupt or truncated stream fails the
 * incoming migration with that message, and the source VM runs on.
 *
 * Nothing here may let the VM run unless the stream was whole: loading
 * succeeds only once the handoff section delivered the engine's end record
 * and it verified (totals, whole-stream digest, every reference resolved).
 * QEMU's core does not notice a live section that stops early, so
 * savevm.c asks handoff_load_verify() before it declares the load done.
 *
 * An early-start overlay's stream is segmented: handoff-load-segments.c
 * takes its bytes apart and applies each part once it is whole and
 * authenticated.
 */
#include "qemu/osdep.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "migration/handoff.h"
#include "qapi/error.h"
#include "qemu-file.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/rcu.h"
#include "ram.h"
#include "sysemu/block-backend.h"
#include "handoff-internal.h"
#include "handoff-load-segments.h"
#include "handoff-early-start.h"
#include "handoff-stream.h"
#include "trace.h"

/* Disk chunks written with one request when they arrive in a row. */
#define DISK_RUN_CHUNKS 256

typedef struct HandoffLoadState {
    HandoffBaseStore *store;
    HandoffDecoder *dec;
    HandoffDisks *disks;        /* [0] the base disk's overlay */
    uint8_t **host;             /* per engine region: RAM, or NULL (disk) */
    uint64_t *size;             /* per engine region: bytes */
    size_t n_regions;
    uint8_t *buf;
    bool complete;              /* end record received and verified */
    HandoffSegmentFeed *segments;   /* a segmented stream's, else NULL */
    /*
     * Early start: once the table part is in, it applies the segments and
     * owns this state (the decoder and what its writer writes to) until
     * it frees it, after the load's cleanup.
     */
    HandoffEarlyStart *early;

    /*
     * Why setup failed. Setup runs before the source opens the return
     * path, so the failure is kept and reported when the handoff section
     * first arrives: then the source learns the cause.
     */
    Error *setup_err;

    /*
     * Consecutive disk chunks not written yet. A stream's disk records
     * come in offset order, and one block request per 4 KiB chunk made
     * the destination, not the link, the bottleneck for disk references.
     */
    HandoffDisk *run_disk;
    uint64_t run_first;
    size_t run_len;
    uint8_t *run_buf;
} HandoffLoadState;

static HandoffLoadState *load_state;

/* Set before the incoming migration starts, for its load. */
static bool expect_segmented;
static uint8_t expected_root[HANDOFF_ROOT_SIZE];
static int segments_fd = -1;
static HandoffEarlyStartOptions early_options = { .feed_fd = -1 };
static uint64_t segments_after;

void handoff_load_expect_segmented(const uint8_t *root, int fd,
                                   uint64_t stream_start,
                                   const HandoffEarlyStartOptions *early)
{
    expect_segmented = true;
    segments_after = stream_start;
    early_options = *early;
    memcpy(expected_root, root, HANDOFF_ROOT_SIZE);
    if (segments_fd >= 0) {
        close(segments_fd);
    }
    segments_fd = fd;
}

/*
 * Reports why the handoff failed here, and tells the source over the
 * return path so that its query-migrate error names the same cause.
 */
static int G_GNUC_PRINTF(1, 2) load_error(const char *fmt, ...)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("handoff: %s", msg);
    if (mis->to_src_file) {
        migrate_send_rp_handoff_error(mis, msg);
    }
    return -EINVAL;
}

static int engine_error(int rc)
{
    const char *cause = handoff_last_error_message();

    return load_error("%s", *cause ? cause : handoff_error_name(rc));
}

static int flush_disk_run(HandoffLoadState *s)
{
    int ret;

    if (!s->run_len) {
        return 0;
    }
    ret = blk_pwrite(s->run_disk->blk, s->run_first * HANDOFF_CHUNK_SIZE,
                     s->run_len * HANDOFF_CHUNK_SIZE, s->run_buf, 0);
    s->run_len = 0;
    return ret;
}

static int write_chunk(void *opaque, uint32_t region, uint64_t index,
                       const void *data)
{
    HandoffLoadState *s = opaque;
    uint64_t offset = index * HANDOFF_CHUNK_SIZE;
    HandoffDisk *d;
    int ret;

    /* The decoder checked the geometry; check again what we index with. */
    if (region >= s->n_regions || offset + HANDOFF_CHUNK_SIZE > s->size[region]) {
        return -ERANGE;
    }
    if (s->early) {
        return handoff_early_start_write(s->early, region, index, data);
    }
    if (s->host[region]) {
        memcpy(s->host[region] + offset, data, HANDOFF_CHUNK_SIZE);
        return 0;
    }
    d = handoff_disks_find(s->disks, region);
    if (!d) {
        return -ERANGE;
    }
    if (s->run_len && (d != s->run_disk ||
                       index != s->run_first + s->run_len ||
                       s->run_len == DISK_RUN_CHUNKS)) {
        ret = flush_disk_run(s);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->run_len) {
        s->run_disk = d;
        s->run_first = index;
    }
    memcpy(s->run_buf + s->run_len++ * HANDOFF_CHUNK_SIZE, data,
           HANDOFF_CHUNK_SIZE);
    return 0;
}

/*
 * A zero run: a range the source's disk reads as zeros (a discard, most
 * often). Written as zeroes that may unmap, so that the overlay here keeps
 * zero clusters where the source's has them instead of allocating them.
 */
static int zero_chunks(void *opaque, uint32_t region, uint64_t first,
                       uint64_t count)
{
    HandoffLoadState *s = opaque;
    HandoffDisk *d = handoff_disks_find(s->disks, region);
    uint64_t chunks;
    int ret;

    if (region >= s->n_regions) {
        return -ERANGE;
    }
    chunks = s->size[region] / HANDOFF_CHUNK_SIZE;
    if (first >= chunks || count > chunks - first) {
        return -ERANGE;
    }
    trace_handoff_load_zero_run(region, first, count);
    if (s->host[region]) {
        memset(s->host[region] + first * HANDOFF_CHUNK_SIZE, 0,
               count * HANDOFF_CHUNK_SIZE);
        return 0;
    }
    if (!d) {
        return -ERANGE;
    }
    /* Chunks buffered before this record are older than it. */
    ret = flush_disk_run(s);
    if (ret < 0) {
        return ret;
    }
    return blk_pwrite_zeroes(d->blk, first * HANDOFF_CHUNK_SIZE,
                             count * HANDOFF_CHUNK_SIZE, BDRV_REQ_MAY_UNMAP);
}

static int read_chunk(void *opaque, uint32_t region, uint64_t index,
                      void *data)
{
    HandoffLoadState *s = opaque;
    uint64_t offset = index * HANDOFF_CHUNK_SIZE;
    HandoffDisk *d;

    if (region >= s->n_regions || offset + HANDOFF_CHUNK_SIZE > s->size[region]) {
        return -ERANGE;
    }
    if (s->early) {
        return -EPERM;          /* segmented streams never read back */
    }
    if (s->host[region]) {
        memcpy(data, s->host[region] + offset, HANDOFF_CHUNK_SIZE);
        return 0;
    }
    d = handoff_disks_find(s->disks, region);
    if (!d) {
        return -ERANGE;
    }
    if (s->run_len && d == s->run_disk && index >= s->run_first &&
        index < s->run_first + s->run_len) {
        memcpy(data, s->run_buf + (index - s->run_first) * HANDOFF_CHUNK_SIZE,
               HANDOFF_CHUNK_SIZE);
        return 0;
    }
    return blk_pread(d->blk, offset, HANDOFF_CHUNK_SIZE, data, 0);
}

static bool map_regions(HandoffLoadState *s, Error **errp)
{
    RAMBlock *rb;
    size_t i;

    s->n_regions = handoff_base_region_count(s->disks->base);
    s->host = g_new0(uint8_t *, s->n_regions);
    s->size = g_new0(uint64_t, s->n_regions);
    for (i = 0; i < s->n_regions; i++) {
        HandoffRegionInfo info;

        if (handoff_base_region_info(s->disks->base, i, &info) < 0) {
            error_setg(errp, "base %s: region %zu unreadable", s->store->dir,
                       i);
            return false;
        }
        s->size[i] = info.size;
    }
    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        for (i = 0; i < s->store->n_memory; i++) {
            if (!strcmp(s->store->memory[i].name, qemu_ram_get_idstr(rb))) {
                s->host[s->store->memory[i].region] =
                    qemu_ram_get_host_addr(rb);
            }
        }
    }
    return true;
}

/*
 * Chunks the stream does not carry must read as the base: an overlay that
 * already holds data (left from an earlier run, or written by someone
 * else) would show that data where the source's disk shows the base's.
 */
static bool check_fresh_overlay(BlockBackend *blk, uint64_t size,
                                Error **errp)
{
    BlockDriverState *bs = blk_bs(blk);
    int64_t off, pnum;

    for (off = 0; off < size; off += pnum) {
        int ret = bdrv_is_allocated(bs, off, size - off, &pnum);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read the allocation map of "
                             "disk '%s'", blk_name(blk));
            return false;
        }
        if (ret) {
            error_setg(errp, "disk '%s' already holds data at offset %"
                       PRId64 " of its overlay %s: a handoff destination "
                       "needs a fresh overlay on the base disk", blk_name(blk),
                       off, bs->filename);
            return false;
        }
        if (pnum <= 0) {
            break;
        }
    }
    return true;
}

/*
 * Images are inactive on an incoming VM until switch-over: activated here
 * to be written. The base disk's overlay must be fresh, every other
 * carried disk empty.
 */
static bool activate_disks(HandoffLoadState *s, Error **errp)
{
    size_t i;

    for (i = 0; i < s->disks->n; i++) {
        HandoffDisk *d = &s->disks->disk[i];

        blk_activate(d->blk, errp);
        if (*errp) {
            return false;
        }
        if (d->is_base ? !check_fresh_overlay(d->blk, d->size, errp)
                       : !handoff_disks_check_empty(d, errp)) {
            return false;
        }
    }
    return true;
}

static bool load_setup(HandoffLoadState *s, const char *dir, Error **errp)
{
    HandoffWriter writer = {
        .struct_size = sizeof(writer),
        .opaque = s,
        .write_chunk = write_chunk,
        .read_chunk = read_chunk,
        .zero_chunks = zero_chunks,
    };
    int rc;

    if (!dir || !*dir) {
        error_setg(errp, "no base for the incoming handoff: start with "
                   "-handoff base=DIR or set migration parameter "
                   "handoff-base before migrate-incoming");
        return false;
    }
    trace_handoff_load_setup(dir);
    s->store = handoff_base_store_open(dir, errp);
    if (!s->store) {
        return false;
    }
    s->disks = handoff_disks_collect(s->store, errp);
    if (!s->disks) {
        return false;
    }
    handoff_trim_warn_if_ignored(s->disks->disk[0].blk);
    s->run_buf = qemu_blockalign(blk_bs(s->disks->disk[0].blk),
                                 DISK_RUN_CHUNKS * HANDOFF_CHUNK_SIZE);
    if (!map_regions(s, errp) || !handoff_base_load_ram(s->store, errp) ||
        !activate_disks(s, errp)) {
        return false;
    }
    rc = handoff_decoder_create(s->disks->base, &writer, NULL, &s->dec);
    if (rc < 0) {
        handoff_error_engine(errp, rc, "cannot start the handoff decoder");
        return false;
    }
    if (expect_segmented) {
        s->segments = handoff_segment_feed_new(s->dec, expected_root,
                                               segments_fd, segments_after,
                                               early_options.on);
        segments_fd = -1;
    }
    return true;
}

/* Never fails itself: see setup_err. */
int handoff_load_setup(QEMUFile *f, void *opaque)
{
    MigrationState *ms = migrate_get_current();
    HandoffLoadState *s = load_state = g_new0(HandoffLoadState, 1);

    s->buf = g_malloc(HANDOFF_BLOCK_MAX);
    if (!load_setup(s, ms->parameters.handoff_base, &s->setup_err)) {
        error_report("handoff: %s", error_get_pretty(s->setup_err));
    }
    return 0;
}

/* Whether the incoming migration being loaded is meant to be a handoff. */
static bool incoming_handoff(void)
{
    return migrate_use_handoff() &&
           migration_incoming_get_current()->state == MIGRATION_STATUS_ACTIVE;
}

bool handoff_load_section_allowed(const char *idstr)
{
    if (!incoming_handoff() ||
        (strcmp(idstr, "ram") && strcmp(idstr, "block"))) {
        return true;
    }
    load_error("the source sent a '%s' section: this destination waits for "
               "a handoff (capability handoff, -handoff base=DIR), not a "
               "plain migration; start it with migrate-handoff", idstr);
    return false;
}

int handoff_load_verify(void)
{
    HandoffLoadState *s = load_state;

    if (!incoming_handoff()) {
        return 0;
    }
    if (!s) {
        return load_error("the migration stream carried no handoff section");
    }
    if (s->setup_err) {
        return load_error("%s", error_get_pretty(s->setup_err));
    }
    if (!s->complete) {
        HandoffDecoderStats st = { .struct_size = sizeof(HandoffDecoderStats) };

        handoff_decoder_stats(s->dec, &st);
        return load_error("the handoff stream ended before its end record "
                          "(%" PRIu64 " stream bytes, %" PRIu64 " frames "
                          "received): the VM state is incomplete and must "
                          "not run", st.stream_bytes, st.frames);
    }
    return 0;
}

static void load_free(void *opaque);

/*
 * Once the table part is in: early start applies the segments from now
 * on, while the device state loads and the VM runs, and owns @s.
 */
static bool begin_early_start(HandoffLoadState *s, Error **errp)
{
    HandoffEarlyStartLoad load = {
        .dec = s->dec,
        .store = s->store,
        .disks = s->disks,
        .host = s->host,
        .size = s->size,
        .n_regions = s->n_regions,
        .options = early_options,
        .release = load_free,
        .opaque = s,
    };

    if (!handoff_segment_feed_take(s->segments, &load.table, &load.fd,
                                   &load.start)) {
        return true;            /* the table part is not whole yet */
    }
    if (!handoff_early_start_begin(&load, &s->early, errp)) {
        handoff_segment_table_free(load.table);
        close(load.fd);
        return false;
    }
    return true;
}

/*
 * @len bytes of a segmented stream, in s->buf; 0 at its end, which must
 * not fall inside a part.
 */
static int load_segmented(HandoffLoadState *s, uint32_t len)
{
    Error *err = NULL;
    bool ok = len ? handoff_segment_feed(s->segments, s->buf, len, &err)
                  : handoff_segment_feed_done(s->segments, &err);

    if (ok && early_options.on && !s->early) {
        ok = begin_early_start(s, &err);
    }
    if (!ok) {
        load_error("%s", error_get_pretty(err));
        error_free(err);
        return -EINVAL;
    }
    return 0;
}

int handoff_load_state(QEMUFile *f, void *opaque, int version_id)
{
    HandoffLoadState *s = load_state;

    if (version_id != HANDOFF_SECTION_VERSION) {
        return load_error("section version %d, this QEMU reads %d",
                          version_id, HANDOFF_SECTION_VERSION);
    }
    if (!s) {
        return load_error("a handoff stream arrived but this QEMU is not set "
                          "up for one (capability handoff and a base)");
    }
    if (s->setup_err) {
        return load_error("%s", error_get_pretty(s->setup_err));
    }
    for (;;) {
        int kind = qemu_get_byte(f);
        uint32_t len;
        int rc;

        if (qemu_file_get_error(f)) {
            error_report("handoff: the migration stream broke off: %s",
                         strerror(-qemu_file_get_error(f)));
            return qemu_file_get_error(f);
        }
        switch (kind) {
        case HANDOFF_BLOCK_EOS:
            /* Nothing waits beyond a section part. */
            rc = flush_disk_run(s);
            if (rc < 0) {
                return load_error("cannot write disk '%s': %s",
                                  blk_name(s->run_disk->blk), strerror(-rc));
            }
            return 0;
        case HANDOFF_BLOCK_DATA:
            if (s->complete) {
                return load_error("stream data after the handoff's end "
                                  "record");
            }
            len = qemu_get_be32(f);
            if (len == 0 || len > HANDOFF_BLOCK_MAX) {
                return load_error("stream block of %u bytes (limit %d)", len,
                                  HANDOFF_BLOCK_MAX);
            }
            if (qemu_get_buffer(f, s->buf, len) != len) {
                error_report("handoff: the migration stream ended inside a "
                             "block");
                return qemu_file_get_error(f) ?: -EIO;
            }
            trace_handoff_load_block(len);
            if (s->segments) {
                rc = load_segmented(s, len);
                if (rc < 0) {
                    return rc;
                }
                break;
            }
            rc = handoff_decoder_feed(s->dec, s->buf, len);
            if (rc < 0) {
                return engine_error(rc);
            }
            break;
        case HANDOFF_BLOCK_END: {
            HandoffDecoderStats st = { .struct_size = sizeof(HandoffDecoderStats) };
            uint64_t records = 0;
            int k;

            if (s->complete) {
                return load_error("a second end of the handoff stream");
            }
            if (s->segments) {
                rc = load_segmented(s, 0);
                if (rc < 0) {
                    return rc;
                }
            }
            if (s->early) {
                /* Its segments still arrive: early start finishes it. */
                s->complete = true;
                break;
            }
            rc = handoff_decoder_finish(s->dec);
            if (rc < 0) {
                return engine_error(rc);
            }
            handoff_decoder_stats(s->dec, &st);
            for (k = 0; k < HANDOFF_REC_KINDS; k++) {
                records += st.records[k];
            }
            trace_handoff_load_complete(records, st.stream_bytes);
            s->complete = true;
            break;
        }
        default:
            return load_error("unknown block kind %d in the migration stream",
                              kind);
        }
    }
}

static void load_free(void *opaque)
{
    HandoffLoadState *s = opaque;

    handoff_segment_feed_free(s->segments);
    handoff_decoder_free(s->dec);
    handoff_disks_free(s->disks);
    handoff_base_store_free(s->store);
    error_free(s->setup_err);
    qemu_vfree(s->run_buf);
    g_free(s->host);
    g_free(s->size);
    g_free(s->buf);
    g_free(s);
}

int handoff_load_cleanup(void *opaque)
{
    HandoffLoadState *s = load_state;

    load_state = NULL;
    if (s && !s->early) {
        load_free(s);
    }
    return 0;
}
