/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Base VMs: saving a VM as a base (handoff-base-create), opening a base
 * directory, and starting a VM from one (-handoff base=DIR,resume=on).
 *
 * A base directory holds:
 *   base.json        manifest: RAM blocks, disk, engine region numbers, ID
 *   memory/N.raw     the bytes of RAM block N (used_length)
 *   disk.raw         the full content of the VM's disk, raw
 *   devices.vmstate  device state, as qemu_save_device_state() writes it
 *   index            the engine's chunk index over memory and disk
 * The disk is copied rather than referenced so that the base is
 * self-consistent: the guest's page cache in memory/ matches disk.raw.
 */
#include "qemu/osdep.h"
#include "block/block.h"
#include "block/block_int-global-state.h"
#include "exec/ramblock.h"
#include "hw/boards.h"
#include "io/channel-file.h"
#include "migration.h"
#include "migration/handoff.h"
#include "migration/global_state.h"
#include "migration/misc.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "qapi/qmp/qlist.h"
#include "qapi/qmp/qnum.h"
#include "qapi/qmp/qstring.h"
#include "qemu-file.h"
#include "qemu/cutils.h"
#include <glib/gstdio.h>
#include "qemu/error-report.h"
#include "qemu/rcu.h"
#include "qemu/yank.h"
#include "ram.h"
#include "savevm.h"
#include "sysemu/block-backend.h"
#include "sysemu/runstate.h"
#include "sysemu/sysemu.h"
#include "handoff-internal.h"
#include "trace.h"

#define DISK_COPY_BYTES (1 << 20)

void handoff_error_engine(Error **errp, int code, const char *what)
{
    const char *cause = handoff_last_error_message();

    /* The engine's message starts with the code's name already. */
    error_setg(errp, "%s: %s", what, *cause ? cause
                                            : handoff_error_name(code));
}

static bool write_file(const char *path, const void *data, uint64_t size,
                       Error **errp)
{
    int fd = qemu_create(path, O_WRONLY | O_TRUNC, 0644, errp);
    const uint8_t *p = data;
    uint64_t done = 0;

    if (fd < 0) {
        return false;
    }
    while (done < size) {
        ssize_t n = write(fd, p + done, MIN(size - done, 1 << 30));

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, errno, "cannot write %s", path);
            close(fd);
            return false;
        }
        done += n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        error_setg_errno(errp, errno, "cannot write %s", path);
        return false;
    }
    return true;
}

static const char *machine_name(void)
{
    return current_machine ?
        object_class_get_name(object_get_class(OBJECT(current_machine))) : "";
}

/* --- which disk -------------------------------------------------------- */

static BlockBackend *pick_disk(const char *device, Error **errp)
{
    BlockBackend *blk, *found = NULL;

    if (device) {
        blk = blk_by_name(device);
        if (!blk) {
            blk = blk_by_qdev_id(device, NULL);
        }
        if (!blk || !blk_is_inserted(blk)) {
            error_setg(errp, "Device '%s' not found or has no medium",
                       device);
            return NULL;
        }
        return blk;
    }
    /*
     * Every device's BlockBackend, not only the monitor's (blk_next): a
     * device given a -blockdev node, as libvirt does, has an anonymous one.
     */
    for (blk = blk_all_next(NULL); blk; blk = blk_all_next(blk)) {
        if (!blk_get_attached_dev(blk) || !blk_is_inserted(blk)) {
            continue;
        }
        if (found) {
            error_setg(errp, "This VM has more than one disk: name the one "
                       "that becomes the base disk with 'device'");
            return NULL;
        }
        found = blk;
    }
    if (!found) {
        error_setg(errp, "This VM has no disk to make a base disk of");
    }
    return found;
}

BlockBackend *handoff_base_find_disk(HandoffBaseStore *store, Error **errp)
{
    g_autofree char *want = realpath(store->disk_path, NULL);
    BlockBackend *blk;

    if (!want) {
        error_setg_errno(errp, errno, "base disk %s", store->disk_path);
        return NULL;
    }
    /* Devices' BlockBackends, anonymous ones included (see above). */
    for (blk = blk_all_next(NULL); blk; blk = blk_all_next(blk)) {
        BlockDriverState *bs = blk_bs(blk);
        BlockDriverState *backing = bs ? bdrv_cow_bs(bs) : NULL;
        g_autofree char *have = NULL;

        if (!backing || !blk_get_attached_dev(blk)) {
            continue;
        }
        have = realpath(backing->filename, NULL);
        if (have && !strcmp(have, want)) {
            if (blk_getlength(blk) != (int64_t)store->disk_size) {
                error_setg(errp, "Disk '%s' is %" PRId64 " bytes, the base "
                           "disk %" PRIu64, blk_name(blk), blk_getlength(blk),
                           store->disk_size);
                return NULL;
            }
            return blk;
        }
    }
    error_setg(errp, "No disk of this VM is an overlay on the base disk %s",
               store->disk_path);
    error_append_hint(errp, "Create one with: qemu-img create -f qcow2 "
                      "-b %s -F raw OVERLAY\n", want);
    return NULL;
}

/* --- handoff-base-create ------------------------------------------------ */

static bool save_memory(const char *dir, QList *list, GArray *specs,
                        Error **errp)
{
    RAMBlock *block;
    unsigned n = 0;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(block) {
        g_autofree char *rel = g_strdup_printf("memory/%u.raw", n++);
        g_autofree char *path = g_build_filename(dir, rel, NULL);
        uint64_t size = qemu_ram_get_used_length(block);
        QDict *entry = qdict_new();
        HandoffRegionSpec spec = {
            .name = qemu_ram_get_idstr(block),
            .kind = HANDOFF_REGION_MEMORY,
            .size = size,
        };

        trace_handoff_base_save_memory(spec.name, size);
        if (!write_file(path, qemu_ram_get_host_addr(block), size, errp)) {
            qobject_unref(entry);
            return false;
        }
        qdict_put_str(entry, "name", spec.name);
        qdict_put_str(entry, "file", rel);
        qdict_put_int(entry, "size", size);
        qlist_append(list, entry);
        /* The engine keeps the path; strings live as long as @list. */
        spec.path = qdict_get_str(entry, "file");
        g_array_append_val(specs, spec);
    }
    return true;
}

static bool save_disk(BlockBackend *blk, const char *path, Error **errp)
{
    int64_t size = blk_getlength(blk);
    g_autofree uint8_t *buf = qemu_blockalign(blk_bs(blk), DISK_COPY_BYTES);
    int64_t offset;
    int fd;

    if (size < 0) {
        error_setg_errno(errp, -size, "cannot get the size of disk '%s'",
                         blk_name(blk));
        return false;
    }
    if (size % HANDOFF_CHUNK_SIZE) {
        error_setg(errp, "Disk '%s' is %" PRId64 " bytes, not a multiple of "
                   "%d", blk_name(blk), size, HANDOFF_CHUNK_SIZE);
        return false;
    }
    fd = qemu_create(path, O_WRONLY | O_TRUNC, 0644, errp);
    if (fd < 0) {
        return false;
    }
    /* A sparse copy: zero stretches stay holes. */
    if (ftruncate(fd, size) < 0) {
        error_setg_errno(errp, errno, "cannot size %s", path);
        goto fail;
    }
    trace_handoff_base_save_disk(blk_name(blk), size);
    for (offset = 0; offset < size; offset += DISK_COPY_BYTES) {
        int64_t len = MIN(DISK_COPY_BYTES, size - offset);
        int ret = blk_pread(blk, offset, len, buf, 0);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "cannot read disk '%s' at %" PRId64,
                             blk_name(blk), offset);
            goto fail;
        }
        if (buffer_is_zero(buf, len)) {
            continue;
        }
        if (pwrite(fd, buf, len, offset) != len) {
            error_setg_errno(errp, errno, "cannot write %s", path);
            goto fail;
        }
    }
    if (fsync(fd) < 0) {
        error_setg_errno(errp, errno, "cannot write %s", path);
        goto fail;
    }
    close(fd);
    return true;

fail:
    close(fd);
    return false;
}

static bool save_devices(const char *path, Error **errp)
{
    QIOChannelFile *ioc;
    QEMUFile *f;
    int ret;

    ioc = qio_channel_file_new_path(path, O_WRONLY | O_CREAT | O_TRUNC, 0644,
                                    errp);
    if (!ioc) {
        return false;
    }
    qio_channel_set_name(QIO_CHANNEL(ioc), "handoff-base-devices");
    f = qemu_file_new_output(QIO_CHANNEL(ioc));
    object_unref(OBJECT(ioc));
    global_state_store_running();
    ret = qemu_save_device_state(f);
    if (qemu_fclose(f) < 0 || ret < 0) {
        error_setg(errp, "cannot save device state to %s", path);
        return false;
    }
    return true;
}

static bool write_manifest(const char *dir, QList *memory, BlockBackend *blk,
                           uint64_t disk_size, const HandoffBase *base,
                           Error **errp)
{
    g_autofree char *path = g_build_filename(dir, HANDOFF_BASE_MANIFEST, NULL);
    QDict *manifest = qdict_new();
    QDict *disk = qdict_new();
    g_autoptr(GString) json = NULL;
    uint8_t id[16];
    char hex[33];
    int i;

    handoff_base_id(base, id);
    for (i = 0; i < 16; i++) {
        sprintf(hex + 2 * i, "%02x", id[i]);
    }
    qdict_put_str(manifest, "format", "qemu-handoff-base/1");
    qdict_put_str(manifest, "id", hex);
    qdict_put_str(manifest, "machine", machine_name());
    qdict_put_obj(manifest, "memory", QOBJECT(qobject_ref(memory)));
    qdict_put_str(disk, "file", HANDOFF_BASE_DISK);
    qdict_put_int(disk, "size", disk_size);
    qdict_put(manifest, "disk", disk);
    qdict_put_str(manifest, "devices", HANDOFF_BASE_DEVICES);
    qdict_put_str(manifest, "index", HANDOFF_BASE_INDEX);
    qdict_put(manifest, "layout", handoff_layout_save(blk));

    json = qobject_to_json_pretty(QOBJECT(manifest), true);
    qobject_unref(manifest);
    g_string_append_c(json, '\n');
    return write_file(path, json->str, json->len, errp);
}

static bool base_create(const char *dir, BlockBackend *blk, Error **errp)
{
    g_autofree char *memdir = g_build_filename(dir, "memory", NULL);
    g_autofree char *disk = g_build_filename(dir, HANDOFF_BASE_DISK, NULL);
    g_autofree char *devices = g_build_filename(dir, HANDOFF_BASE_DEVICES,
                                                NULL);
    g_autofree char *index = g_build_filename(dir, HANDOFF_BASE_INDEX, NULL);
    g_autoptr(GArray) specs = g_array_new(false, true,
                                          sizeof(HandoffRegionSpec));
    QList *memory = qlist_new();
    HandoffRegionSpec disk_spec = {
        .name = HANDOFF_BASE_DISK_REGION,
        .kind = HANDOFF_REGION_DISK,
        .path = disk,
    };
    HandoffBase *base = NULL;
    bool ok = false;
    guint i;
    int rc;

    if (g_mkdir(memdir, 0755) < 0) {
        error_setg_errno(errp, errno, "cannot create %s", memdir);
        goto out;
    }
    if (!save_memory(dir, memory, specs, errp) ||
        !save_devices(devices, errp) ||
        !save_disk(blk, disk, errp)) {
        goto out;
    }
    /* The index records them relative to @dir: a copied base still works. */
    for (i = 0; i < specs->len; i++) {
        HandoffRegionSpec *spec = &g_array_index(specs, HandoffRegionSpec, i);

        spec->path = g_build_filename(dir, spec->path, NULL);
    }
    disk_spec.size = blk_getlength(blk);
    g_array_append_val(specs, disk_spec);
    rc = handoff_base_create((HandoffRegionSpec *)specs->data, specs->len,
                             index, &base);
    for (i = 0; i + 1 < specs->len; i++) {
        g_free((char *)g_array_index(specs, HandoffRegionSpec, i).path);
    }
    if (rc < 0) {
        handoff_error_engine(errp, rc, "cannot index the base");
        goto out;
    }
    ok = write_manifest(dir, memory, blk, disk_spec.size, base, errp);
    handoff_base_free(base);
out:
    qobject_unref(memory);
    return ok;
}

void qmp_handoff_base_create(const char *dir, bool has_device,
                             const char *device, Error **errp)
{
    g_autofree char *abs = NULL;
    bool was_running = runstate_is_running();
    BlockBackend *blk;

    if (migration_is_running(migrate_get_current()->state)) {
        error_setg(errp, "Cannot create a base while a migration runs");
        return;
    }
    blk = pick_disk(has_device ? device : NULL, errp);
    if (!blk) {
        return;
    }
    abs = g_path_is_absolute(dir) ? g_strdup(dir)
                                  : g_build_filename(g_get_current_dir(), dir,
                                                     NULL);
    if (g_mkdir(abs, 0755) < 0) {
        error_setg_errno(errp, errno, "cannot create base directory %s", abs);
        return;
    }
    vm_stop(RUN_STATE_SAVE_VM);
    if (!base_create(abs, blk, errp)) {
        error_prepend(errp, "Base %s not created: ", abs);
    }
    if (was_running) {
        vm_start();
    }
}

void hmp_handoff_base_create(Monitor *mon, const QDict *qdict)
{
    const char *device = qdict_get_try_str(qdict, "device");
    Error *err = NULL;

    qmp_handoff_base_create(qdict_get_str(qdict, "dir"), !!device, device,
                            &err);
    hmp_handle_error(mon, err);
}

/* --- opening a base ----------------------------------------------------- */

/* Opens a regular file of the base, refusing a symbolic link. */
static int open_base_file(const char *path, uint64_t max_size, Error **errp)
{
    struct stat st;
    int fd = qemu_open(path, O_RDONLY | O_NOFOLLOW, errp);

    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (max_size && st.st_size > max_size)) {
        error_setg(errp, "%s: not a regular file%s", path,
                   max_size ? " of a sensible size" : "");
        qemu_close(fd);
        return -1;
    }
    return fd;
}

static QDict *read_manifest(HandoffBaseStore *store, Error **errp)
{
    g_autofree char *path = g_build_filename(store->dir,
                                             HANDOFF_BASE_MANIFEST, NULL);
    g_autofree char *text = g_malloc(HANDOFF_MANIFEST_MAX_BYTES + 1);
    Error *local_err = NULL;
    ssize_t len;
    int fd = open_base_file(path, HANDOFF_MANIFEST_MAX_BYTES, &local_err);

    if (fd < 0) {
        error_propagate_prepend(errp, local_err, "Not a handoff base: ");
        return NULL;
    }
    len = read(fd, text, HANDOFF_MANIFEST_MAX_BYTES + 1);
    qemu_close(fd);
    if (len < 0 || len > HANDOFF_MANIFEST_MAX_BYTES) {
        error_setg(errp, "%s: cannot read the manifest", path);
        return NULL;
    }
    text[len] = 0;
    return handoff_manifest_from_text(path, text, errp);
}

/*
 * The first use of a base in this process re-hashes its files: the index
 * says what they held when it was built, and a file changed since (even
 * with its mtime put back) would decode to a VM that silently differs.
 * Later uses trust that first check; handoff-base-verify repeats it.
 */
static GHashTable *verified_bases;     /* "ID DIR" of bases verified */
G_LOCK_DEFINE_STATIC(verified_bases);  /* main and migration threads */

static bool base_verified(const char *key, int change)
{
    bool was;

    G_LOCK(verified_bases);
    if (!verified_bases) {
        verified_bases = g_hash_table_new_full(g_str_hash, g_str_equal,
                                               g_free, NULL);
    }
    was = g_hash_table_contains(verified_bases, key);
    if (change > 0) {
        g_hash_table_add(verified_bases, g_strdup(key));
    } else if (change < 0) {
        g_hash_table_remove(verified_bases, key);
    }
    G_UNLOCK(verified_bases);
    return was;
}

/*
 * Whoever started this QEMU verified the base of content ID @id at @dir
 * itself (the synthesis service hashes each base once, and again when its
 * files change, instead of every VM's QEMU hashing it at start): the first
 * use here trusts that. The mark is keyed by the content ID, and
 * handoff_base_store_open() looks it up by the ID the index gives when
 * opened, so it covers only the base it was given for.
 */
void handoff_base_trust_verified(const char *dir, const char *id)
{
    g_autofree char *key = g_strdup_printf("%s %s", id, dir);

    base_verified(key, 1);
}

bool handoff_base_store_verify(HandoffBaseStore *store, bool force,
                               Error **errp)
{
    g_autofree char *key = g_strdup_printf("%s %s", store->id, store->dir);
    int rc;

    if (!force && base_verified(key, 0)) {
        return true;
    }
    trace_handoff_base_verify(store->dir);
    rc = handoff_base_verify(store->base);
    if (rc < 0) {
        handoff_error_engine(errp, rc, store->dir);
        error_prepend(errp, "Base changed since it was indexed: ");
        base_verified(key, -1);
        return false;
    }
    base_verified(key, 1);
    return true;
}

HandoffBaseStore *handoff_base_store_open(const char *dir, Error **errp)
{
    g_autoptr(HandoffBaseStore) store = g_new0(HandoffBaseStore, 1);
    g_autofree char *index_path = NULL;
    QDict *manifest;
    uint8_t id[16];
    bool ok;
    size_t i;
    int rc;

    store->dir = g_strdup(dir);
    manifest = read_manifest(store, errp);
    if (!manifest) {
        return NULL;
    }
    ok = handoff_manifest_parse(store, manifest, errp);
    qobject_unref(manifest);
    if (!ok) {
        return NULL;
    }
    index_path = g_build_filename(dir, HANDOFF_BASE_INDEX, NULL);
    rc = handoff_base_open(index_path, &store->base);
    if (rc < 0) {
        handoff_error_engine(errp, rc, index_path);
        return NULL;
    }
    if (!handoff_manifest_bind(store, errp)) {
        return NULL;
    }
    handoff_base_id(store->base, id);
    for (i = 0; i < 16; i++) {
        sprintf(store->id + 2 * i, "%02x", id[i]);
    }
    if (!handoff_base_store_verify(store, false, errp)) {
        return NULL;
    }
    return g_steal_pointer(&store);
}

HandoffBaseVerification *qmp_handoff_base_verify(const char *dir,
                                                 Error **errp)
{
    int64_t start = g_get_monotonic_time();
    g_autoptr(HandoffBaseStore) store = handoff_base_store_open(dir, errp);
    HandoffBaseVerification *v;
    size_t i, n;

    if (!store || !handoff_base_store_verify(store, true, errp)) {
        return NULL;
    }
    v = g_new0(HandoffBaseVerification, 1);
    v->id = g_strdup(store->id);
    n = handoff_base_region_count(store->base);
    for (i = 0; i < n; i++) {
        HandoffRegionInfo info;

        if (handoff_base_region_info(store->base, i, &info) == 0) {
            v->bytes += info.size;
        }
    }
    v->seconds = (g_get_monotonic_time() - start) / 1e6;
    return v;
}

static HandoffBaseMemory *base_memory(HandoffBaseStore *store,
                                      const char *name)
{
    size_t i;

    for (i = 0; i < store->n_memory; i++) {
        if (!strcmp(store->memory[i].name, name)) {
            return &store->memory[i];
        }
    }
    return NULL;
}

bool handoff_base_check_ram(HandoffBaseStore *store, Error **errp)
{
    RAMBlock *block;
    size_t count = 0;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(block) {
        HandoffBaseMemory *m = base_memory(store, qemu_ram_get_idstr(block));

        if (!m) {
            error_setg(errp, "RAM block '%s' of this VM is not in base %s "
                       "(another machine type or device set?)",
                       qemu_ram_get_idstr(block), store->dir);
            return false;
        }
        if (m->size != qemu_ram_get_used_length(block)) {
            error_setg(errp, "RAM block '%s' is " RAM_ADDR_FMT " bytes here, "
                       "%" PRIu64 " in base %s (another -m?)",
                       m->name, qemu_ram_get_used_length(block), m->size,
                       store->dir);
            return false;
        }
        count++;
    }
    if (count != store->n_memory) {
        error_setg(errp, "This VM has %zu RAM blocks, base %s has %zu",
                   count, store->dir, store->n_memory);
        return false;
    }
    return true;
}

/*
 * RAM comes from the region files the engine mapped and the index
 * describes (and the first use verified), not from paths of its own.
 */
bool handoff_base_load_ram(HandoffBaseStore *store, Error **errp)
{
    RAMBlock *block;

    if (!handoff_base_check_ram(store, errp)) {
        return false;
    }
    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(block) {
        HandoffBaseMemory *m = base_memory(store, qemu_ram_get_idstr(block));
        /*
         * Read from the base's file, not copied from its mapping: the
         * kernel fills guest RAM (huge pages where QEMU advised them)
         * without a fault per 4 KiB page of the mapping, which on 512 MiB
         * took 0.55-1.1 s against 0.09 s read (nested virtualization
         * makes each fault dear).
         */
        int rc = handoff_base_read(store->base, m->region, 0,
                                   qemu_ram_get_host_addr(block), m->size);

        if (rc < 0) {
            g_autofree char *what = g_strdup_printf("Base %s: RAM block '%s'",
                                                    store->dir, m->name);

            handoff_error_engine(errp, rc, what);
            return false;
        }
    }
    return true;
}

/* --- -handoff base=DIR,resume=on --------------------------------------- */

void handoff_base_resume(const char *dir, Error **errp)
{
    g_autoptr(HandoffBaseStore) store = handoff_base_store_open(dir, errp);
    MigrationState *ms = migrate_get_current();
    MigrationIncomingState *mis = migration_incoming_get_current();
    bool send_configuration = ms->send_configuration;
    bool suppress_vmdesc = current_machine->suppress_vmdesc;
    QIOChannelFile *ioc;
    QEMUFile *f;
    BlockBackend *disk;
    int ret, fd;

    if (!store) {
        return;
    }
    trace_handoff_base_resume(dir);
    if (strcmp(store->machine, machine_name())) {
        error_setg(errp, "Cannot start from base %s: it was saved from "
                   "machine %s, this VM is %s", dir, store->machine,
                   machine_name());
        return;
    }
    disk = handoff_base_find_disk(store, errp);
    if (!disk || !handoff_layout_check(store->layout, disk, errp) ||
        !handoff_base_load_ram(store, errp)) {
        error_prepend(errp, "Cannot start from base %s: ", dir);
        return;
    }
    handoff_trim_warn_if_ignored(disk);
    /* Devices last: their post_load may read guest memory (virtio rings). */
    fd = open_base_file(store->devices_path, 0, errp);
    if (fd < 0) {
        return;
    }
    ioc = qio_channel_file_new_fd(fd);
    qio_channel_set_name(QIO_CHANNEL(ioc), "handoff-base-devices");
    f = qemu_file_new_input(QIO_CHANNEL(ioc));
    object_unref(OBJECT(ioc));
    /*
     * As load_snapshot() does, minus the configuration section and the
     * description that qemu_save_device_state() does not write (the
     * machine was checked against the manifest above).
     */
    if (!yank_register_instance(MIGRATION_YANK_INSTANCE, errp)) {
        qemu_fclose(f);
        return;
    }
    mis->from_src_file = f;
    ms->send_configuration = false;
    current_machine->suppress_vmdesc = true;    /* none follows either */
    ret = qemu_loadvm_state(f);
    current_machine->suppress_vmdesc = suppress_vmdesc;
    ms->send_configuration = send_configuration;
    migration_incoming_state_destroy();
    if (ret < 0) {
        error_setg(errp, "Cannot start from base %s: loading device state "
                   "from %s failed", dir, store->devices_path);
    }
}
