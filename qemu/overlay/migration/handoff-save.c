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
 * estimated rest fits the downtime limit. The save loop owns the
 * migration dirty log while handoff runs ("ram" is inactive then).
 *
 * Stream carriage, in every section part: blocks of
 *   u8 HANDOFF_BLOCK_DATA, be32 length, bytes of the engine's stream
 * then u8 HANDOFF_BLOCK_END after the engine's end record (last part
 * only), and u8 HANDOFF_BLOCK_EOS closing the part.
 *
 * This file sets the section up, tears it down and registers it; the
 * rounds, the sending and the statistics have files of their own
 * (handoff-save.h).
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "block/block_int-global-state.h"
#include "block/dirty-bitmap.h"
#include "exec/ram_addr.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "migration/handoff.h"
#include "migration/register.h"
#include "qapi/error.h"
#include "qemu-file.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/rcu.h"
#include "ram.h"
#include "sysemu/block-backend.h"
#include "sysemu/cpu-throttle.h"
#include "handoff-overlay.h"
#include "handoff-save.h"
#include "handoff-stream.h"
#include "trace.h"

QEMU_BUILD_BUG_ON(TARGET_PAGE_SIZE % HANDOFF_CHUNK_SIZE);

HandoffSaveState *handoff_save_state;

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
    /*
     * An early-start overlay: each chunk once, the order's first. A paused
     * VM's rounds after the first are empty (memory is offered once per
     * round through the pending bitmap, and nothing writes the disk), and
     * the engine accepts their iteration markers; a chunk offered twice
     * fails the save (HANDOFF_E_DUPLICATE_CHUNK) rather than the stream.
     */
    s->segmented = handoff_overlay_save_order(&config.order,
                                              &config.order_count);
    config.segmented = s->segmented;
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
    HandoffSaveState *s = handoff_save_state;
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
        handoff_save_update_stats(s);
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
    handoff_save_state = NULL;
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
    s = handoff_save_state = g_new0(HandoffSaveState, 1);
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
    HandoffSaveState *s = handoff_save_state;
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
    handoff_save_start_round(s);
    handoff_save_request_free_memory(s);
    trace_handoff_save_setup(s->store->dir, s->round->len);
    s->bytes_at_round = qemu_file_total_transferred_fast(f);
    /* The stream header (base ID first) goes out before any bulk data. */
    if (handoff_save_drain_encoder(s, f, false) < 0) {
        return -EIO;
    }
    qemu_put_byte(f, HANDOFF_BLOCK_EOS);
    handoff_save_update_stats(s);
    return 0;

fail:
    error_prepend(&err, "handoff: ");
    error_report_err(error_copy(err));
    qemu_file_set_error_obj(f, -EINVAL, err);
    return -EINVAL;
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
