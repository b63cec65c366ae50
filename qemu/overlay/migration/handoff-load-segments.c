/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Loading a segmented handoff stream (engine stream version 3, an
 * early-start overlay's: docs/stream-format.md, "Segmented streams") as
 * its bytes arrive in the handoff section's blocks, whose boundaries
 * have nothing to do with the stream's parts.
 *
 * The table part is gathered whole and handed to the decoder with the
 * root the overlay's description names, so the table is authenticated
 * before any of its fields is used; then each segment is gathered (at
 * most HANDOFF_SEGMENT_MAX_BYTES, its length from the authenticated
 * table) and applied on its own, the engine checking its SHA-256 before
 * it writes a byte of it. A damaged segment thus fails the load naming
 * that segment, with nothing of it in RAM or on disk. The VM still runs
 * only after the whole stream verified (handoff-load.c).
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
    HandoffSegmentTable *table;     /* once the table part is loaded */
    uint8_t *buf;                   /* the table part, then a segment */
    size_t have;                    /* bytes gathered in @buf */
    size_t need;                    /* bytes the part being gathered has */
    bool table_len_known;
    uint32_t next, count;           /* segments: next to gather, all */
};

HandoffSegmentFeed *handoff_segment_feed_new(HandoffDecoder *dec,
                                             const uint8_t *root)
{
    HandoffSegmentFeed *f = g_new0(HandoffSegmentFeed, 1);

    f->dec = dec;
    memcpy(f->root, root, HANDOFF_ROOT_SIZE);
    f->need = 64;               /* a first guess; the engine corrects it */
    f->buf = g_malloc(TABLE_PROBE_MAX);
    return f;
}

void handoff_segment_feed_free(HandoffSegmentFeed *f)
{
    if (f) {
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

/* Sets @need to segment @next's length, or 0 after the last. */
static bool next_segment(HandoffSegmentFeed *f, Error **errp)
{
    uint32_t len = 0;
    int rc;

    f->have = 0;
    f->need = 0;
    if (f->next == f->count) {
        return true;
    }
    rc = handoff_segment_table_entry(f->table, f->next, NULL, &len, NULL,
                                     NULL, 0, NULL);
    if (rc < 0) {
        return engine_failed(rc, errp);
    }
    if (!len || len > HANDOFF_SEGMENT_MAX_BYTES) {
        error_setg(errp, "segment %u of %u: length %u", f->next, f->count,
                   len);
        return false;
    }
    f->need = len;
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
    return next_segment(f, errp);
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

/* @f->buf holds @f->need bytes: what they complete happens now. */
static bool part_complete(HandoffSegmentFeed *f, Error **errp)
{
    int rc;

    if (!f->table) {
        if (!f->table_len_known) {
            return learn_table_length(f, errp) &&
                   (f->have < f->need || part_complete(f, errp));
        }
        return load_table(f, errp);
    }
    trace_handoff_load_segment(f->next, f->need);
    rc = handoff_decoder_apply_segment(f->dec, f->next, f->buf, f->need);
    if (rc < 0) {
        return engine_failed(rc, errp);
    }
    f->next++;
    return next_segment(f, errp);
}

bool handoff_segment_feed(HandoffSegmentFeed *f, const uint8_t *data,
                          size_t len, Error **errp)
{
    while (len) {
        size_t n;

        if (f->table && f->next == f->count) {
            error_setg(errp, "%zu stream bytes after the last of %u "
                       "segments", len, f->count);
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
    if (!f->table) {
        error_setg(errp, "the segmented stream ended in its table part");
        return false;
    }
    if (f->next < f->count) {
        error_setg(errp, "the segmented stream ended %s segment %u of %u",
                   f->have ? "inside" : "before", f->next, f->count);
        return false;
    }
    return true;
}
