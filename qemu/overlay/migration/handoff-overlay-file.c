/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading VM overlay files, and launching a VM from one: the incoming
 * migration URI "handoff-overlay:PATH" (what -handoff overlay=PATH sets).
 *
 * Nothing of an overlay is applied before all of it is known good: the
 * header and sizes are checked, the description is matched against this
 * VM and its base, and the whole stream is hashed against the header's
 * digest first. Reading a local file twice costs far less than a VM that
 * starts from a damaged overlay (the handoff's own end record covers the
 * handoff section, not the device state after it).
 */
#include "qemu/osdep.h"
#include "io/channel-file.h"
#include "migration.h"
#include "channel.h"
#include "qapi/error.h"
#include "qapi/qmp/qjson.h"
#include "qemu/bswap.h"
#include "handoff-overlay.h"
#include "handoff-stream.h"

void handoff_overlay_header_encode(const HandoffOverlayHeader *h,
                                   uint8_t out[HANDOFF_OVERLAY_HEADER_BYTES])
{
    memset(out, 0, HANDOFF_OVERLAY_HEADER_BYTES);
    memcpy(out, HANDOFF_OVERLAY_MAGIC, HANDOFF_OVERLAY_MAGIC_BYTES);
    stl_be_p(out + 8, h->version);
    stl_be_p(out + 12, h->description_bytes);
    stq_be_p(out + 16, h->stream_bytes);
    memcpy(out + 24, h->digest, HANDOFF_OVERLAY_DIGEST_BYTES);
}

bool handoff_overlay_header_decode(const uint8_t in[HANDOFF_OVERLAY_HEADER_BYTES],
                                   HandoffOverlayHeader *h, Error **errp)
{
    static const uint8_t zero[8];

    if (memcmp(in, HANDOFF_OVERLAY_MAGIC, HANDOFF_OVERLAY_MAGIC_BYTES)) {
        error_setg(errp, "not a VM overlay (no overlay magic)");
        return false;
    }
    h->version = ldl_be_p(in + 8);
    h->description_bytes = ldl_be_p(in + 12);
    h->stream_bytes = ldq_be_p(in + 16);
    memcpy(h->digest, in + 24, HANDOFF_OVERLAY_DIGEST_BYTES);
    if (h->version != HANDOFF_OVERLAY_VERSION) {
        error_setg(errp, "overlay format version %u, this QEMU reads %u",
                   h->version, HANDOFF_OVERLAY_VERSION);
        return false;
    }
    if (memcmp(in + 56, zero, sizeof(zero))) {
        error_setg(errp, "overlay header has reserved bytes set");
        return false;
    }
    if (!h->description_bytes ||
        h->description_bytes > HANDOFF_OVERLAY_DESCRIPTION_MAX) {
        error_setg(errp, "overlay description of %u bytes (1..%u allowed)",
                   h->description_bytes, HANDOFF_OVERLAY_DESCRIPTION_MAX);
        return false;
    }
    if (!h->stream_bytes) {
        error_setg(errp, "overlay was never finished (its save failed or "
                   "is still running)");
        return false;
    }
    return true;
}

void handoff_overlay_file_free(HandoffOverlayFile *file)
{
    if (!file) {
        return;
    }
    if (file->fd >= 0) {
        close(file->fd);
    }
    qobject_unref(file->description);
    g_free(file);
}

static bool read_exactly(int fd, void *buf, size_t len, const char *what,
                         Error **errp)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            error_setg_errno(errp, errno, "cannot read the overlay's %s",
                             what);
            return false;
        }
        if (n == 0) {
            error_setg(errp, "overlay truncated in its %s", what);
            return false;
        }
        done += n;
    }
    return true;
}

static QDict *read_description(int fd, uint32_t len, GChecksum *sum,
                               Error **errp)
{
    g_autofree char *text = g_malloc(len + 1);
    QObject *obj;
    QDict *dict;

    if (!read_exactly(fd, text, len, "description", errp)) {
        return NULL;
    }
    g_checksum_update(sum, (const guchar *)text, len);
    text[len] = '\0';
    obj = qobject_from_json(text, errp);
    dict = qobject_to(QDict, obj);
    if (!dict) {
        if (obj) {
            error_setg(errp, "overlay description is not a JSON object");
        } else {
            error_prepend(errp, "overlay description: ");
        }
        qobject_unref(obj);
    }
    return dict;
}

/* The stream, from the current offset, has the length @h names. */
static bool check_stream_size(int fd, const HandoffOverlayHeader *h,
                              Error **errp)
{
    off_t start = lseek(fd, 0, SEEK_CUR);
    struct stat st;

    if (fstat(fd, &st) < 0 || start < 0) {
        error_setg_errno(errp, errno, "cannot size the overlay");
        return false;
    }
    if ((uint64_t)st.st_size - start != h->stream_bytes) {
        error_setg(errp, "overlay %s: its stream has %" PRIu64 " of the %"
                   PRIu64 " bytes its header names",
                   (uint64_t)st.st_size - start < h->stream_bytes ?
                   "truncated" : "has trailing bytes",
                   (uint64_t)st.st_size - start, h->stream_bytes);
        return false;
    }
    return true;
}

/*
 * Adds the stream (from the current offset) to @sum, which holds the
 * description already, and checks the result against @h's digest.
 */
static bool verify_stream(int fd, const HandoffOverlayHeader *h,
                          GChecksum *sum, Error **errp)
{
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    uint8_t digest[HANDOFF_OVERLAY_DIGEST_BYTES];
    gsize digest_len = sizeof(digest);
    uint64_t left = h->stream_bytes;
    off_t start = lseek(fd, 0, SEEK_CUR);

    if (!check_stream_size(fd, h, errp)) {
        return false;
    }
    while (left) {
        size_t n = MIN(left, 1 << 20);

        if (!read_exactly(fd, buf, n, "stream", errp)) {
            return false;
        }
        g_checksum_update(sum, buf, n);
        left -= n;
    }
    g_checksum_get_digest(sum, digest, &digest_len);
    if (memcmp(digest, h->digest, sizeof(digest))) {
        error_setg(errp, "overlay corrupted: the SHA-256 of its "
                   "description and stream differs from its header's");
        return false;
    }
    return lseek(fd, start, SEEK_SET) == start;
}

HandoffOverlayFile *handoff_overlay_file_open(const char *path,
                                              bool defer_digest, Error **errp)
{
    g_autoptr(HandoffOverlayFile) file = g_new0(HandoffOverlayFile, 1);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    uint8_t raw[HANDOFF_OVERLAY_HEADER_BYTES];

    file->fd = qemu_open(path, O_RDONLY, errp);
    if (file->fd < 0 ||
        !read_exactly(file->fd, raw, sizeof(raw), "header", errp) ||
        !handoff_overlay_header_decode(raw, &file->header, errp)) {
        return NULL;
    }
    file->description = read_description(file->fd,
                                         file->header.description_bytes,
                                         sum, errp);
    if (!file->description ||
        !(defer_digest ? check_stream_size(file->fd, &file->header, errp)
                       : verify_stream(file->fd, &file->header, sum, errp))) {
        return NULL;
    }
    return g_steal_pointer(&file);
}

static gboolean overlay_accept_incoming(QIOChannel *ioc, GIOCondition cond,
                                        gpointer opaque)
{
    migration_channel_process_incoming(ioc);
    object_unref(OBJECT(ioc));
    return G_SOURCE_REMOVE;
}

void handoff_overlay_start_incoming(const char *path, Error **errp)
{
    MigrationState *s = migrate_get_current();
    g_autoptr(HandoffOverlayFile) file = NULL;
    g_autoptr(HandoffBaseStore) store = NULL;
    QIOChannel *ioc;
    uint8_t root[HANDOFF_ROOT_SIZE];
    HandoffEarlyStartOptions early;
    bool segmented;

    if (!migrate_use_handoff() || !*s->parameters.handoff_base) {
        error_setg(errp, "A VM overlay loads with capability handoff and "
                   "parameter handoff-base set (-handoff base=DIR)");
        return;
    }
    if (!handoff_cli_early_start(&early, errp)) {
        return;
    }
    /*
     * With a feed the segments are still being written: the digest is
     * checked once they are all in, each segment against the table
     * before that (handoff-early-start.c).
     */
    file = handoff_overlay_file_open(path, early.feed_fd >= 0, errp);
    store = file ? handoff_base_store_open(s->parameters.handoff_base, errp)
                 : NULL;
    if (!store || !handoff_overlay_check(file->description, store, errp) ||
        !handoff_overlay_early_start(file->description, &segmented, root,
                                     errp)) {
        return;
    }
    if (early.on && !segmented) {
        error_setg(errp, "-handoff early-start=on: overlay '%s' carries no "
                   "early-start stream (save it with early-start-order)",
                   path);
        return;
    }
    if (segmented) {
        int fd = qemu_dup(file->fd);

        if (fd < 0) {
            error_setg_errno(errp, errno, "cannot open the overlay's "
                             "segments");
            return;
        }
        memcpy(early.digest, file->header.digest, sizeof(early.digest));
        early.digest_from = HANDOFF_OVERLAY_HEADER_BYTES;
        early.digest_bytes = file->header.description_bytes +
                             file->header.stream_bytes;
        handoff_load_expect_segmented(root, fd,
                                      HANDOFF_OVERLAY_HEADER_BYTES +
                                      file->header.description_bytes,
                                      &early);
    }
    ioc = QIO_CHANNEL(qio_channel_file_new_fd(file->fd));
    file->fd = -1;
    qio_channel_set_name(ioc, "handoff-overlay-incoming");
    qio_channel_add_watch_full(ioc, G_IO_IN, overlay_accept_incoming,
                               NULL, NULL,
                               g_main_context_get_thread_default());
}
