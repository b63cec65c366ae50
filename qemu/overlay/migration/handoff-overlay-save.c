/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * handoff-overlay-save: a handoff whose destination is a VM overlay file.
 *
 * It is an ordinary outgoing migration with the handoff capability, so it
 * has what a handoff has (rounds while the VM runs, query-migrate
 * progress, migrate_cancel), written to PATH.part through a file channel
 * that hashes every byte, and renamed to PATH once the migration
 * completed and the header holds the stream's size and digest. A failed
 * or cancelled save leaves no file behind.
 *
 * A file cannot answer, so this migration runs without the return path a
 * handoff otherwise requires (it exists to learn the destination's
 * verdict): the capabilities are set for the save and restored after it,
 * as is handoff-compression, since an overlay is made for size.
 *
 * With early-start-order, the stream is a segmented engine stream (version
 * 3) that carries the order's chunks first, and the description names its
 * root (handoff-overlay-early.c). A segmented stream carries each chunk
 * once, so such a save needs a paused VM: a running one's rounds would
 * send chunks again. The migration stream carries the segmented stream's
 * table part; its segments follow the migration stream, written when it
 * completed, so that a loader has the device state before them. Its root
 * is known at the end only, so the description gets it then, and the
 * digest is computed by reading the finished file back.
 */
#include "qemu/osdep.h"
#include "io/channel-file.h"
#include "migration.h"
#include "channel.h"
#include "migration/misc.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qapi/qapi-commands-migration.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "qom/object.h"
#include "sysemu/runstate.h"
#include "handoff-overlay.h"

typedef struct OverlaySave {
    char *path;
    char *part;                 /* written here until complete */
    int fd;                     /* until the migration's channel owns it */
    uint32_t description_bytes;
    GChecksum *sum;             /* description, then stream (migration
                                   thread) */
    uint64_t stream_bytes;
    bool had_handoff;
    bool had_return_path;
    char *had_compression;
    Notifier notifier;

    /* Early start: the order read, and the root filled in at the end. */
    bool segmented;
    HandoffChunkRef *order;
    size_t order_count;
    ssize_t root_offset;        /* of its hex digits in the description */
    ssize_t segments_bytes_offset;  /* of the segments' total there */
    bool has_root;
    uint8_t root[HANDOFF_ROOT_SIZE];
    GByteArray *segments;       /* the engine stream, its segments from */
    size_t segments_from;       /* here on */
} OverlaySave;

static OverlaySave *overlay_save;

/* --- a file channel that hashes what it writes --------------------------- */

#define TYPE_HANDOFF_OVERLAY_CHANNEL "qio-channel-handoff-overlay"

static QIOChannelClass *file_channel_class;

static ssize_t overlay_channel_writev(QIOChannel *ioc, const struct iovec *iov,
                                      size_t niov, int *fds, size_t nfds,
                                      int flags, Error **errp)
{
    ssize_t done = file_channel_class->io_writev(ioc, iov, niov, fds, nfds,
                                                 flags, errp);
    size_t left = done > 0 ? done : 0;
    size_t i;

    for (i = 0; i < niov && left; i++) {
        size_t n = MIN(left, iov[i].iov_len);

        g_checksum_update(overlay_save->sum, iov[i].iov_base, n);
        overlay_save->stream_bytes += n;
        left -= n;
    }
    return done;
}

static void overlay_channel_class_init(ObjectClass *klass, void *data)
{
    QIOChannelClass *ioc_klass = QIO_CHANNEL_CLASS(klass);

    file_channel_class = QIO_CHANNEL_CLASS(
        object_class_by_name(TYPE_QIO_CHANNEL_FILE));
    ioc_klass->io_writev = overlay_channel_writev;
}

static const TypeInfo overlay_channel_info = {
    .parent = TYPE_QIO_CHANNEL_FILE,
    .name = TYPE_HANDOFF_OVERLAY_CHANNEL,
    .instance_size = sizeof(QIOChannelFile),
    .class_init = overlay_channel_class_init,
};

static void overlay_channel_register(void)
{
    type_register_static(&overlay_channel_info);
}
type_init(overlay_channel_register)

/* --- the save's life ------------------------------------------------------ */

static void overlay_save_end(OverlaySave *save)
{
    MigrationState *s = migrate_get_current();

    s->enabled_capabilities[MIGRATION_CAPABILITY_HANDOFF] =
        save->had_handoff;
    s->enabled_capabilities[MIGRATION_CAPABILITY_RETURN_PATH] =
        save->had_return_path;
    g_free(s->parameters.handoff_compression);
    s->parameters.handoff_compression = save->had_compression;
    if (save->fd >= 0) {
        close(save->fd);
    }
    if (save->notifier.notify) {
        remove_migration_state_change_notifier(&save->notifier);
    }
    unlink(save->part);         /* gone already when it was completed */
    handoff_chunk_refs_free(save->order);
    if (save->segments) {
        g_byte_array_unref(save->segments);
    }
    g_checksum_free(save->sum);
    g_free(save->path);
    g_free(save->part);
    g_free(save);
    overlay_save = NULL;
}

/* The segments, after the migration stream; the header counts them in. */
static bool overlay_save_put_segments(OverlaySave *save, int fd,
                                      Error **errp)
{
    const uint8_t *bytes = save->segments->data + save->segments_from;
    size_t len = save->segments->len - save->segments_from, done = 0;
    off_t at = HANDOFF_OVERLAY_HEADER_BYTES + save->description_bytes +
               save->stream_bytes;

    while (done < len) {
        ssize_t n = pwrite(fd, bytes + done, len - done, at + done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "cannot write the "
                             "segments of overlay '%s'", save->part);
            return false;
        }
        done += n;
    }
    save->stream_bytes += len;
    return true;
}

/*
 * A segmented stream's segments go after the migration stream and its
 * root into the description's placeholder; the digest, which covers
 * both, is then made from the file.
 */
static bool overlay_save_put_root(OverlaySave *save, int fd,
                                  uint8_t digest[HANDOFF_OVERLAY_DIGEST_BYTES],
                                  Error **errp)
{
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    char hex[HANDOFF_OVERLAY_ROOT_HEX + 1];
    char total[HANDOFF_OVERLAY_SEGMENTS_BYTES_WIDTH + 1];
    uint64_t left;
    off_t at = HANDOFF_OVERLAY_HEADER_BYTES;
    gsize len = HANDOFF_OVERLAY_DIGEST_BYTES;

    if (!save->has_root) {
        error_setg(errp, "the segmented stream was not finished: no root");
        return false;
    }
    if (!overlay_save_put_segments(save, fd, errp)) {
        return false;
    }
    left = save->description_bytes + save->stream_bytes;
    handoff_overlay_root_hex(save->root, hex);
    /* The number, then spaces, in the placeholder's 20 characters. */
    snprintf(total, sizeof(total), "%-*zu",
             HANDOFF_OVERLAY_SEGMENTS_BYTES_WIDTH,
             save->segments->len - save->segments_from);
    if (pwrite(fd, hex, HANDOFF_OVERLAY_ROOT_HEX,
               HANDOFF_OVERLAY_HEADER_BYTES + save->root_offset) !=
        HANDOFF_OVERLAY_ROOT_HEX ||
        pwrite(fd, total, HANDOFF_OVERLAY_SEGMENTS_BYTES_WIDTH,
               HANDOFF_OVERLAY_HEADER_BYTES + save->segments_bytes_offset) !=
        HANDOFF_OVERLAY_SEGMENTS_BYTES_WIDTH) {
        error_setg_errno(errp, errno, "cannot complete overlay '%s'",
                         save->path);
        return false;
    }
    while (left) {
        ssize_t n = pread(fd, buf, MIN(left, 1 << 20), at);

        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "cannot read back "
                             "overlay '%s'", save->part);
            return false;
        }
        g_checksum_update(sum, buf, n);
        left -= n;
        at += n;
    }
    g_checksum_get_digest(sum, digest, &len);
    return true;
}

/* Writes the final header into the complete overlay and names it PATH. */
static bool overlay_save_finish(OverlaySave *save, Error **errp)
{
    HandoffOverlayHeader h = {
        .version = HANDOFF_OVERLAY_VERSION,
        .description_bytes = save->description_bytes,
        .stream_bytes = save->stream_bytes,
    };
    uint8_t raw[HANDOFF_OVERLAY_HEADER_BYTES];
    gsize len = sizeof(h.digest);
    int fd = qemu_open(save->part, O_RDWR, errp);
    bool ok;

    if (fd < 0) {
        return false;
    }
    if (save->segmented) {
        if (!overlay_save_put_root(save, fd, h.digest, errp)) {
            close(fd);
            return false;
        }
        h.stream_bytes = save->stream_bytes;    /* the segments too */
    } else {
        g_checksum_get_digest(save->sum, h.digest, &len);
    }
    handoff_overlay_header_encode(&h, raw);
    ok = pwrite(fd, raw, sizeof(raw), 0) == sizeof(raw) && !fsync(fd);
    close(fd);
    if (!ok || rename(save->part, save->path) < 0) {
        error_setg_errno(errp, errno, "cannot complete overlay '%s'",
                         save->path);
        return false;
    }
    return true;
}

static void overlay_save_state_changed(Notifier *notifier, void *data)
{
    MigrationState *s = data;
    OverlaySave *save = container_of(notifier, OverlaySave, notifier);
    Error *err = NULL;

    if (migration_has_finished(s)) {
        if (!overlay_save_finish(save, &err)) {
            migrate_set_error(s, err);
            error_report_err(err);
        }
    } else if (!migration_has_failed(s)) {
        return;
    }
    overlay_save_end(save);
}

/* PATH.part with a blank header and the description; or -1. */
static int overlay_save_open(OverlaySave *save, QDict *description,
                             Error **errp)
{
    g_autoptr(GString) json = qobject_to_json_pretty(QOBJECT(description),
                                                     true);
    uint8_t blank[HANDOFF_OVERLAY_HEADER_BYTES] = { 0 };
    int fd;

    if (json->len > HANDOFF_OVERLAY_DESCRIPTION_MAX) {
        error_setg(errp, "overlay description too large (%zu bytes)",
                   json->len);
        return -1;
    }
    save->root_offset = save->segmented ?
                        handoff_overlay_root_offset(json->str) : 0;
    save->segments_bytes_offset = save->segmented ?
        handoff_overlay_segments_bytes_offset(json->str) : 0;
    if (save->root_offset < 0 || save->segments_bytes_offset < 0) {
        error_setg(errp, "overlay description: cannot place the root of "
                   "the segmented stream");
        return -1;
    }
    /* A new file, as for the page-class map: no link followed. */
    fd = qemu_create(save->part, O_WRONLY | O_EXCL | O_NOFOLLOW, 0600, errp);
    if (fd < 0) {
        return -1;
    }
    if (qemu_write_full(fd, blank, sizeof(blank)) != sizeof(blank) ||
        qemu_write_full(fd, json->str, json->len) != json->len) {
        error_setg_errno(errp, errno, "cannot write '%s'", save->part);
        close(fd);
        return -1;
    }
    /* The digest covers the description: it decides the command line. */
    g_checksum_update(save->sum, (const guchar *)json->str, json->len);
    save->description_bytes = json->len;
    return fd;
}

/*
 * Reads the early-start order against @disks' base (the regions the save
 * numbers chunks in) with the engine's reader, which names a bad line.
 */
static bool overlay_save_read_order(OverlaySave *save, HandoffDisks *disks,
                                    const char *path, Error **errp)
{
    int rc = handoff_order_file_read(disks->base, path, &save->order,
                                     &save->order_count);

    if (rc < 0) {
        error_setg(errp, "early-start-order: %s",
                   handoff_last_error_message());
        return false;
    }
    save->segmented = true;
    return true;
}

/* Describes this VM against @base and writes the overlay's first part. */
static bool overlay_save_prepare(OverlaySave *save, const char *base,
                                 const char *compression,
                                 const char *order_path, Error **errp)
{
    g_autoptr(HandoffBaseStore) store = handoff_base_store_open(base, errp);
    g_autoptr(HandoffDisks) disks = store ? handoff_disks_collect(store, errp)
                                          : NULL;
    g_autoptr(QDict) description = NULL;

    if (!disks ||
        (order_path && !overlay_save_read_order(save, disks, order_path,
                                                errp))) {
        return false;
    }
    description = handoff_overlay_describe(store, disks, compression);
    if (save->segmented) {
        handoff_overlay_describe_early_start(description, save->order_count);
    }
    save->fd = overlay_save_open(save, description, errp);
    return save->fd >= 0;
}

bool handoff_overlay_save_order(const HandoffChunkRef **order, size_t *count)
{
    if (!overlay_save || !overlay_save->segmented) {
        return false;
    }
    *order = overlay_save->order;
    *count = overlay_save->order_count;
    return true;
}

void handoff_overlay_save_set_segments(const uint8_t root[HANDOFF_ROOT_SIZE],
                                       GByteArray *stream, size_t from)
{
    if (!overlay_save || !overlay_save->segmented) {
        g_byte_array_unref(stream);
        return;
    }
    memcpy(overlay_save->root, root, HANDOFF_ROOT_SIZE);
    overlay_save->has_root = true;
    if (overlay_save->segments) {
        g_byte_array_unref(overlay_save->segments);
    }
    overlay_save->segments = stream;
    overlay_save->segments_from = from;
}

void qmp_handoff_overlay_save(const char *path, bool has_base,
                              const char *base, bool has_compression,
                              const char *compression,
                              bool has_early_start_order,
                              const char *early_start_order, Error **errp)
{
    ERRP_GUARD();
    MigrationState *s = migrate_get_current();
    const char *mode = has_compression ? compression
                                       : HANDOFF_OVERLAY_DEFAULT_COMPRESSION;
    g_autofree char *uri = g_strdup_printf(HANDOFF_OVERLAY_URI "%s", path);
    HandoffEncoderConfig parsed;
    OverlaySave *save;

    if (overlay_save || migration_is_running(s->state)) {
        error_setg(errp, "A migration or overlay save is in progress");
        return;
    }
    /*
     * A segmented stream carries one version of each chunk; a running
     * VM's rounds send the chunks it writes again. (Resumed during the
     * save, the engine refuses the second version: the save fails.)
     */
    if (has_early_start_order && runstate_is_running()) {
        error_setg(errp, "early-start-order needs a paused VM: a running "
                   "VM's save sends the chunks it writes again, and an "
                   "early-start overlay carries each chunk once; stop it "
                   "first");
        return;
    }
    if (has_base) {
        g_free(s->parameters.handoff_base);
        s->parameters.handoff_base = g_strdup(base);
    }
    if (!*s->parameters.handoff_base) {
        error_setg(errp, "No base: give 'base' or set parameter "
                   "handoff-base");
        return;
    }
    /* Validated here; the save resolves it with handoff-delta. */
    if (!handoff_compression_config(mode, true, &parsed, errp)) {
        return;
    }
    save = g_new0(OverlaySave, 1);
    save->path = g_strdup(path);
    save->part = g_strdup_printf("%s.part", path);
    save->fd = -1;
    save->sum = g_checksum_new(G_CHECKSUM_SHA256);
    save->had_handoff = s->enabled_capabilities[MIGRATION_CAPABILITY_HANDOFF];
    save->had_return_path =
        s->enabled_capabilities[MIGRATION_CAPABILITY_RETURN_PATH];
    save->had_compression = g_strdup(s->parameters.handoff_compression);
    overlay_save = save;
    if (!overlay_save_prepare(save, s->parameters.handoff_base, mode,
                              has_early_start_order ? early_start_order
                                                    : NULL, errp)) {
        overlay_save_end(save);
        return;
    }
    g_free(s->parameters.handoff_compression);
    s->parameters.handoff_compression = g_strdup(mode);
    s->enabled_capabilities[MIGRATION_CAPABILITY_HANDOFF] = true;
    s->enabled_capabilities[MIGRATION_CAPABILITY_RETURN_PATH] = false;
    save->notifier.notify = overlay_save_state_changed;
    add_migration_state_change_notifier(&save->notifier);
    qmp_migrate(uri, false, false, false, false, false, false, false, false,
                errp);
    if (*errp && overlay_save == save &&
        !migration_is_running(s->state)) {
        overlay_save_end(save);
    }
}

/* qmp_migrate's transport for HANDOFF_OVERLAY_URI. */
void handoff_overlay_start_outgoing(MigrationState *s, const char *path,
                                    Error **errp)
{
    QIOChannelFile *ioc;

    if (!overlay_save || strcmp(path, overlay_save->path) ||
        overlay_save->fd < 0) {
        error_setg(errp, "'" HANDOFF_OVERLAY_URI "' migrations are made by "
                   "handoff-overlay-save");
        return;
    }
    ioc = QIO_CHANNEL_FILE(object_new(TYPE_HANDOFF_OVERLAY_CHANNEL));
    ioc->fd = overlay_save->fd;
    overlay_save->fd = -1;
    qio_channel_set_name(QIO_CHANNEL(ioc), "handoff-overlay-outgoing");
    migration_channel_connect(s, QIO_CHANNEL(ioc), NULL, NULL);
    object_unref(OBJECT(ioc));
}

void hmp_handoff_overlay_save(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_handoff_overlay_save(qdict_get_str(qdict, "path"), false, NULL,
                             qdict_haskey(qdict, "compression"),
                             qdict_get_try_str(qdict, "compression"),
                             false, NULL, &err);
    if (!err) {
        monitor_printf(mon, "Saving; progress in 'info migrate'\n");
    }
    hmp_handle_error(mon, err);
}
