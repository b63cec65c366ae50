/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Loading a segmented handoff stream (engine stream version 3, an
 * early-start overlay's: docs/stream-format.md, "Segmented streams";
 * docs/overlay-format.md, "Early start"). Its table part arrives in the
 * handoff section's blocks, whose boundaries have nothing to do with the
 * stream's parts; its segments follow the migration stream at the end of
 * the overlay file, so that the device state comes before them.
 *
 * The table part is gathered whole and handed to the decoder with the
 * root the overlay's description names, so the table is authenticated
 * before any of its fields is used; then each segment is read from the
 * file (at most HANDOFF_SEGMENT_MAX_BYTES, its place and length from the
 * authenticated table) and applied on its own, the engine checking its
 * SHA-256 before it writes a byte of it. A damaged segment thus fails the
 * load naming that segment, with nothing of it in RAM or on disk. They
 * are applied when the table part is in, before the device state loads,
 * which may read the RAM they carry; the VM runs only after the whole
 * stream verified (handoff-load.c).
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "handoff-internal.h"
#include "handoff-load-segments.h"
#include "trace.h"

/*
 * Bytes asked for to learn the table part's length; the engine says when
 * it needs more (a header is at most 64 KiB), within this bound.
 */
#define TABLE_PROBE_MAX (HANDOFF_SEGMENT_MAX_BYTES + 4096)

struct HandoffSegmentFeed {
    HandoffDecoder *dec;
    uint8_t root[HANDOFF_ROOT_SIZE];
    int fd;                         /* the overlay, segments at its end */
    bool early;                     /* early start applies them, not us */
    bool taken;                     /* by early start, with the table */
    uint64_t start;                 /* of the segments in the file */
    uint64_t stream_start;          /* of the migration stream */
    HandoffSegmentTable *table;     /* once the table part is loaded */
    uint8_t *buf;                   /* the table part, then a segment */
    size_t have;                    /* bytes gathered in @buf */
    size_t need;                    /* bytes the part being gathered has */
    bool table_len_known;
    uint32_t next, count;           /* segments: next to apply, all */
};

HandoffSegmentFeed *handoff_segment_feed_new(HandoffDecoder *dec,
                                             const uint8_t *root, int fd,
                                             uint64_t stream_start,
                                             bool early)
{
    HandoffSegmentFeed *f = g_new0(HandoffSegmentFeed, 1);

    f->stream_start = stream_start;
    f->dec = dec;
    f->fd = fd;
    f->early = early;
    memcpy(f->root, root, HANDOFF_ROOT_SIZE);
    f->need = 64;               /* a first guess; the engine corrects it */
    f->buf = g_malloc(TABLE_PROBE_MAX);
    return f;
}

void handoff_segment_feed_free(HandoffSegmentFeed *f)
{
    if (f) {
        if (f->fd >= 0) {
            close(f->fd);
        }
        handoff_segment_table_free(f->table);
        g_free(f->buf);
        g_free(f);
    }
}

static bool engine_failed(int rc, Error **errp)
{
    const char *cause = handoff_last_error_message();

    error_setg(errp, "%s", *cause ? cause : handoff_error_name(rc));
    return false;
}

/*
 * Where the segments start in the file: they end it, and the table says
 * how many bytes they take (each one's offset from the end of the table
 * part and its length).
 */
static bool segments_start(HandoffSegmentFeed *f, uint64_t *start,
                           Error **errp)
{
    uint64_t end = 0, offset;
    uint32_t k, len;
    struct stat st;

    for (k = 0; k < f->count; k++) {
        int rc = handoff_segment_table_entry(f->table, k, &offset, &len,
                                             NULL, NULL, 0, NULL);

        if (rc < 0) {
            return engine_failed(rc, errp);
        }
        end = MAX(end, offset + len);
    }
    if (fstat(f->fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot size the overlay");
        return false;
    }
    /* The migration stream, this table part's at least, comes first. */
    if ((uint64_t)st.st_size < end ||
        (uint64_t)st.st_size - end < f->stream_start + f->have) {
        error_setg(errp, "the overlay has %" PRIu64 " bytes, too few for "
                   "its migration stream and the %" PRIu64 " of its "
                   "segments", (uint64_t)st.st_size, end);
        return false;
    }
    *start = st.st_size - end;
    return true;
}

bool handoff_segment_read(int fd, const HandoffSegmentTable *table,
                          uint64_t start, uint32_t k, uint8_t *buf,
                          uint32_t *len, Error **errp)
{
    uint64_t offset;
    size_t done = 0;
    int rc = handoff_segment_table_entry(table, k, &offset, len, NULL, NULL,
                                         0, NULL);

    if (rc < 0) {
        return engine_failed(rc, errp);
    }
    if (!*len || *len > HANDOFF_SEGMENT_MAX_BYTES) {
        error_setg(errp, "segment %u of %u: length %u", k,
                   handoff_segment_table_count(table), *len);
        return false;
    }
    while (done < *len) {
        ssize_t n = pread(fd, buf + done, *len - done,
                          start + offset + done);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EIO, "cannot read "
                             "segment %u of the overlay", k);
            return false;
        }
        done += n;
    }
    return true;
}

/* Every segment, read from the file in number order and applied. */
static bool apply_segments(HandoffSegmentFeed *f, Error **errp)
{
    uint32_t len;
    int rc;

    for (f->next = 0; f->next < f->count; f->next++) {
        if (!handoff_segment_read(f->fd, f->table, f->start, f->next,
                                  f->buf, &len, errp)) {
            return false;
        }
        trace_handoff_load_segment(f->next, len);
        rc = handoff_decoder_apply_segment(f->dec, f->next, f->buf, len);
        if (rc < 0) {
            return engine_failed(rc, errp);
        }
    }
    return true;
}

/* The table part, known to be whole: authenticated, then loaded. */
static bool load_table(HandoffSegmentFeed *f, Error **errp)
{
    int rc = handoff_segment_table_open(f->buf, f->have, f->root, &f->table);

    if (rc == 0) {
        rc = handoff_decoder_load_table(f->dec, f->buf, f->have, f->root);
    }
    if (rc < 0) {
        error_setg(errp, "the overlay's segmented stream: %s",
                   handoff_last_error_message());
        return false;
    }
    f->count = handoff_segment_table_count(f->table);
    trace_handoff_load_table(f->have, f->count);
    g_free(f->buf);
    f->buf = g_malloc(HANDOFF_SEGMENT_MAX_BYTES);
    if (!segments_start(f, &f->start, errp)) {
        return false;
    }
    return f->early || apply_segments(f, errp);
}

/*
 * The table part's length, once enough of it is in: then @buf grows to
 * hold it all. Not trusted: its bound is the memory it may take.
 */
static bool learn_table_length(HandoffSegmentFeed *f, Error **errp)
{
    uint64_t len = 0;
    int rc = handoff_segment_table_length(f->buf, f->have, &len);
    uint8_t *grown;

    if (rc == HANDOFF_E_TRUNCATED && len > f->have && len <= TABLE_PROBE_MAX) {
        f->need = len;
        return true;
    }
    if (rc < 0) {
        error_setg(errp, "the overlay says its stream is segmented, and "
                   "its stream is not: %s", handoff_last_error_message());
        return false;
    }
    if (len < f->have) {
        error_setg(errp, "the segmented stream's table part has %" PRIu64
                   " bytes, fewer than its header", len);
        return false;
    }
    if (len > HANDOFF_LOAD_TABLE_MAX) {
        error_setg(errp, "the segmented stream's table part has %" PRIu64
                   " bytes, more than the %d this QEMU takes", len,
                   HANDOFF_LOAD_TABLE_MAX);
        return false;
    }
    grown = g_try_realloc(f->buf, len);
    if (!grown) {
        error_setg(errp, "no memory for a table part of %" PRIu64 " bytes",
                   len);
        return false;
    }
    f->buf = grown;
    f->table_len_known = true;
    f->need = len;
    return true;
}

/* @f->buf holds @f->need bytes of the table part. */
static bool part_complete(HandoffSegmentFeed *f, Error **errp)
{
    if (!f->table_len_known) {
        return learn_table_length(f, errp) &&
               (f->have < f->need || part_complete(f, errp));
    }
    return load_table(f, errp);
}

bool handoff_segment_feed(HandoffSegmentFeed *f, const uint8_t *data,
                          size_t len, Error **errp)
{
    while (len) {
        size_t n;

        if (f->table || f->taken) {
            error_setg(errp, "%zu bytes after the segmented stream's table "
                       "part in the migration stream, where its segments "
                       "are not", len);
            return false;
        }
        n = MIN(len, f->need - f->have);
        memcpy(f->buf + f->have, data, n);
        f->have += n;
        data += n;
        len -= n;
        if (f->have == f->need && !part_complete(f, errp)) {
            return false;
        }
    }
    return true;
}

bool handoff_segment_feed_done(HandoffSegmentFeed *f, Error **errp)
{
    if (!f->table && !f->taken) {
        error_setg(errp, "the segmented stream ended in its table part");
        return false;
    }
    return true;
}

bool handoff_segment_feed_take(HandoffSegmentFeed *f,
                               HandoffSegmentTable **table, int *fd,
                               uint64_t *start)
{
    if (!f->early || !f->table) {
        return false;
    }
    *table = g_steal_pointer(&f->table);
    *fd = f->fd;
    f->fd = -1;
    *start = f->start;
    f->early = false;
    f->taken = true;
    f->count = 0;
    return true;
}
