/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * qemu-handoff: the test-only QMP commands of the handoff-early filter
 * (x-handoff-early-mark-absent, x-handoff-early-place,
 * x-handoff-early-query), which stand in for early start's stream.
 *
 * They run in the main thread under the BQL, which keeps the node alive;
 * the filter's own lock makes them safe against its requests, wherever
 * the node's AioContext runs.
 */
#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/handoff-early.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qemu/base64.h"

static BDRVHandoffEarlyState *handoff_early_node(const char *node_name,
                                                 Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node_name);

    if (!bs) {
        error_setg(errp, "no node '%s'", node_name);
        return NULL;
    }
    return handoff_early_of(bs, errp);
}

void qmp_x_handoff_early_mark_absent(const char *node_name, uint64_t chunk,
                                     uint64_t count, Error **errp)
{
    BDRVHandoffEarlyState *s = handoff_early_node(node_name, errp);

    if (s) {
        handoff_early_mark_absent(s, chunk, count, errp);
    }
}

/* One placement's chunk count and bytes (NULL for zeros), or false. */
static bool handoff_early_decode(HandoffEarlyPlacement *p, uint64_t chunks,
                                 uint64_t *count, uint8_t **data,
                                 Error **errp)
{
    ERRP_GUARD();
    size_t len;

    *data = NULL;
    if (p->has_data == p->has_zero_chunks) {
        error_setg(errp, "chunk %" PRIu64 ": give either data or "
                   "zero-chunks", p->chunk);
        return false;
    }
    *count = p->zero_chunks;
    if (p->has_data) {
        *data = qbase64_decode(p->data, -1, &len, errp);
        if (!*data) {
            return false;
        }
        *count = len / 4096;
        if (len % 4096) {
            error_setg(errp, "chunk %" PRIu64 ": %zu bytes of data, not a "
                       "whole number of 4 KiB chunks", p->chunk, len);
        }
    }
    if (!*errp && (!*count || p->chunk >= chunks ||
                   *count > chunks - p->chunk)) {
        error_setg(errp, "chunks %" PRIu64 "+%" PRIu64 " are not within the "
                   "node (%" PRIu64 " chunks of 4 KiB)", p->chunk, *count,
                   chunks);
    }
    if (*errp) {
        g_free(*data);
        return false;
    }
    return true;
}

typedef struct HandoffEarlyDecoded {
    uint64_t chunk, count;
    uint8_t *data;
} HandoffEarlyDecoded;

void qmp_x_handoff_early_place(const char *node_name,
                               HandoffEarlyPlacementList *placements,
                               Error **errp)
{
    ERRP_GUARD();
    BDRVHandoffEarlyState *s = handoff_early_node(node_name, errp);
    g_autoptr(GArray) all = NULL;
    HandoffEarlyPlacementList *p;
    HandoffEarlyDecoded d;
    HandoffEarlyStats st;
    guint i;

    if (!s) {
        return;
    }
    handoff_early_stats(s, &st);
    /* Refuse a malformed list whole, before anything is queued. */
    all = g_array_new(false, false, sizeof(d));
    for (p = placements; p; p = p->next) {
        d.chunk = p->value->chunk;
        if (!handoff_early_decode(p->value, st.chunks, &d.count, &d.data,
                                  errp)) {
            break;
        }
        g_array_append_val(all, d);
    }
    for (i = 0; i < all->len; i++) {
        d = g_array_index(all, HandoffEarlyDecoded, i);
        if (*errp) {
            g_free(d.data);
        } else {
            handoff_early_place(s, d.chunk, d.count, d.data, errp);
        }
    }
}

static void handoff_early_log_add(uint64_t chunk, int64_t ns, void *opaque)
{
    HandoffEarlyTouchList ***tail = opaque;
    HandoffEarlyTouch *t = g_new0(HandoffEarlyTouch, 1);

    t->chunk = chunk;
    t->ns = ns;
    QAPI_LIST_APPEND(*tail, t);
}

HandoffEarlyInfo *qmp_x_handoff_early_query(const char *node_name,
                                            Error **errp)
{
    BDRVHandoffEarlyState *s = handoff_early_node(node_name, errp);
    HandoffEarlyInfo *info;
    HandoffEarlyTouchList **tail;
    HandoffEarlyStats st;

    if (!s) {
        return NULL;
    }
    handoff_early_stats(s, &st);
    info = g_new0(HandoffEarlyInfo, 1);
    *info = (HandoffEarlyInfo) {
        .chunks = st.chunks, .absent = st.absent, .waits = st.waits,
        .writes = st.writes, .placed = st.placed, .dropped = st.dropped,
        .superseded = st.superseded, .touched = st.touched,
        .queued_bytes = st.queued_bytes,
    };
    if (st.touched) {
        tail = &info->log;
        info->has_log = true;
        handoff_early_log_foreach(s, handoff_early_log_add, &tail);
    }
    return info;
}
