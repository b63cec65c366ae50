/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The disks a handoff carries: the overlay on the base disk, and every
 * other disk the guest can write (a data volume attached after the base
 * was saved), unless the operator declares it shared by both cloudlets
 * (migration parameter handoff-shared-disks). Read-only media and empty
 * drives stay behind.
 *
 * A carried extra disk is a region of an extended base (the engine's
 * handoff_base_extend): it reads as zeros in the base, so the destination
 * needs an empty image in its place. Both ends derive the same regions
 * from their own command lines: named "drive:" + the drive's name, in
 * name order, with the disk's size. A destination configured otherwise
 * has another base ID and refuses the stream before applying anything.
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "hw/qdev-core.h"
#include "migration.h"
#include "qapi/error.h"
#include "sysemu/block-backend.h"
#include "handoff-internal.h"

#define EXTRA_REGION_PREFIX "drive:"

/* The device the user named for @blk, for messages and shared-disks. */
static char *disk_device_id(BlockBackend *blk)
{
    DeviceState *dev = blk_get_attached_dev(blk);

    /* virtio-blk's device is a child of the proxy the user named. */
    if (dev && !dev->id && dev->parent_bus && dev->parent_bus->parent) {
        dev = dev->parent_bus->parent;
    }
    if (!dev) {
        return g_strdup("");
    }
    return dev->id ? g_strdup(dev->id)
                   : object_get_canonical_path(OBJECT(dev));
}

static gint disk_name_order(gconstpointer a, gconstpointer b)
{
    const HandoffDisk *x = a, *y = b;

    return strcmp(x->region_name, y->region_name);
}

/* Adds @blk as an extra disk the handoff carries, or sets @errp. */
static bool add_extra_disk(GArray *disks, BlockBackend *blk, Error **errp)
{
    int64_t size = blk_getlength(blk);
    HandoffDisk d = { .blk = blk };

    if (!*blk_name(blk)) {
        g_autofree char *id = disk_device_id(blk);

        error_setg(errp, "Disk of device '%s' is writable and has no drive "
                   "name: the handoff cannot name it to the destination", id);
        error_append_hint(errp, "Give it a drive id (-drive id=NAME or "
                          "-blockdev node-name with a named BlockBackend), "
                          "or list it in handoff-shared-disks\n");
        return false;
    }
    /*
     * The handoff reads and writes disks from the migration thread under
     * the BQL; a disk in an iothread's AioContext would need that context
     * taken around every request. Refused until it is.
     */
    if (blk_get_aio_context(blk) != qemu_get_aio_context()) {
        error_setg(errp, "Disk '%s' runs in an iothread: handoff does not "
                   "carry such disks yet", blk_name(blk));
        return false;
    }
    if (size < 0 || size % HANDOFF_CHUNK_SIZE) {
        error_setg(errp, "Disk '%s' is %" PRId64 " bytes: a carried disk "
                   "must be a multiple of %d bytes", blk_name(blk), size,
                   HANDOFF_CHUNK_SIZE);
        return false;
    }
    d.size = size;
    d.region_name = g_strdup_printf(EXTRA_REGION_PREFIX "%s", blk_name(blk));
    if (strlen(d.region_name) > HANDOFF_MAX_REGION_NAME) {
        error_setg(errp, "Disk '%s': its drive name is longer than %d "
                   "bytes", blk_name(blk),
                   HANDOFF_MAX_REGION_NAME - (int)strlen(EXTRA_REGION_PREFIX));
        g_free(d.region_name);
        return false;
    }
    g_array_append_val(disks, d);
    return true;
}

/* The base the stream is made against: extended by the extra disks. */
static bool make_stream_base(HandoffDisks *disks, HandoffBaseStore *store,
                             Error **errp)
{
    g_autofree HandoffRegionSpec *specs = NULL;
    size_t i;
    int rc;

    disks->base = store->base;
    if (disks->n == 1) {
        return true;
    }
    specs = g_new0(HandoffRegionSpec, disks->n - 1);
    for (i = 1; i < disks->n; i++) {
        specs[i - 1].name = disks->disk[i].region_name;
        specs[i - 1].kind = HANDOFF_REGION_DISK;
        specs[i - 1].size = disks->disk[i].size;
    }
    rc = handoff_base_extend(store->base, specs, disks->n - 1,
                             &disks->extended);
    if (rc < 0) {
        handoff_error_engine(errp, rc, "cannot extend the base by this VM's "
                             "other disks");
        return false;
    }
    disks->base = disks->extended;
    return true;
}

HandoffDisks *handoff_disks_collect(HandoffBaseStore *store, Error **errp)
{
    const char *shared = migrate_get_current()->parameters.handoff_shared_disks;
    g_autoptr(HandoffDisks) disks = g_new0(HandoffDisks, 1);
    GArray *extra = g_array_new(false, true, sizeof(HandoffDisk));
    BlockBackend *base_blk, *blk;
    size_t i;

    base_blk = handoff_base_find_disk(store, errp);
    if (!base_blk) {
        g_array_free(extra, true);
        return NULL;
    }
    if (blk_get_aio_context(base_blk) != qemu_get_aio_context()) {
        error_setg(errp, "Disk '%s' runs in an iothread: handoff does not "
                   "carry such disks yet", blk_name(base_blk));
        g_array_free(extra, true);
        return NULL;
    }
    /* Devices' BlockBackends, anonymous ones (-blockdev) included. */
    for (blk = blk_all_next(NULL); blk; blk = blk_all_next(blk)) {
        g_autofree char *id = NULL;

        if (blk == base_blk || !blk_get_attached_dev(blk) ||
            !blk_is_inserted(blk) || !blk_is_writable(blk)) {
            continue;
        }
        id = disk_device_id(blk);
        if (handoff_disk_is_shared(shared, blk_name(blk), id)) {
            continue;
        }
        if (!add_extra_disk(extra, blk, errp)) {
            for (i = 0; i < extra->len; i++) {
                g_free(g_array_index(extra, HandoffDisk, i).region_name);
            }
            g_array_free(extra, true);
            return NULL;
        }
    }
    g_array_sort(extra, disk_name_order);

    disks->n = 1 + extra->len;
    disks->disk = g_new0(HandoffDisk, disks->n);
    disks->disk[0].blk = base_blk;
    disks->disk[0].size = store->disk_size;
    disks->disk[0].region = store->disk_region;
    disks->disk[0].region_name = g_strdup(HANDOFF_BASE_DISK_REGION);
    disks->disk[0].is_base = true;
    for (i = 0; i < extra->len; i++) {
        disks->disk[1 + i] = g_array_index(extra, HandoffDisk, i);
        disks->disk[1 + i].region =
            handoff_base_region_count(store->base) + i;
    }
    g_array_free(extra, true);
    if (!make_stream_base(disks, store, errp)) {
        return NULL;
    }
    return g_steal_pointer(&disks);
}

HandoffDisk *handoff_disks_find(HandoffDisks *disks, uint32_t region)
{
    size_t i;

    for (i = 0; disks && i < disks->n; i++) {
        if (disks->disk[i].region == region) {
            return &disks->disk[i];
        }
    }
    return NULL;
}

/*
 * A destination's carried disk starts empty: the base reads zeros there,
 * and chunks the stream does not carry (zero on the source) must read
 * zeros here too.
 */
bool handoff_disks_check_empty(HandoffDisk *d, Error **errp)
{
    BlockDriverState *bs = blk_bs(d->blk);
    int64_t off, pnum;

    for (off = 0; off < (int64_t)d->size; off += pnum) {
        int ret = bdrv_block_status_above(bs, NULL, off, d->size - off,
                                          &pnum, NULL, NULL);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read the allocation map of "
                             "disk '%s'", blk_name(d->blk));
            return false;
        }
        if (!(ret & BDRV_BLOCK_ZERO)) {
            error_setg(errp, "disk '%s' holds data at offset %" PRId64 ": a "
                       "handoff destination needs an empty image for each "
                       "disk the VM carries besides the base disk (a new "
                       "sparse one: qemu-img create)", blk_name(d->blk), off);
            return false;
        }
        if (pnum <= 0) {
            break;
        }
    }
    return true;
}

void handoff_disks_free(HandoffDisks *disks)
{
    size_t i;

    if (!disks) {
        return;
    }
    for (i = 0; i < disks->n; i++) {
        g_free(disks->disk[i].region_name);
    }
    g_free(disks->disk);
    handoff_base_free(disks->extended);
    g_free(disks);
}
