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

/*
 * One placement's chunk count and bytes (NULL for zeros), or false; its
 * range is checked where it is queued (handoff_early_place_many).
 */
static bool handoff_early_decode(HandoffEarlyPlacement *p, uint64_t *count,
                                 uint8_t **data, Error **errp)
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
        *count = len / HANDOFF_EARLY_CHUNK;
        if (len % HANDOFF_EARLY_CHUNK) {
            error_setg(errp, "chunk %" PRIu64 ": %zu bytes of data, not a "
                       "whole number of 4 KiB chunks", p->chunk, len);
        }
    }
    if (*errp) {
        g_free(*data);
        return false;
    }
    return true;
}

void qmp_x_handoff_early_place(const char *node_name,
                               HandoffEarlyPlacementList *placements,
                               Error **errp)
{
    BDRVHandoffEarlyState *s = handoff_early_node(node_name, errp);
    g_autoptr(GArray) all = NULL;
    HandoffEarlyPlacementList *p;
    HandoffEarlyChunks c;
    bool ok = true;
    guint i;

    if (!s) {
        return;
    }
    /* Refuse a malformed list whole: nothing is queued unless all is. */
    all = g_array_new(false, false, sizeof(c));
    for (p = placements; p && ok; p = p->next) {
        c.first = p->value->chunk;
        ok = handoff_early_decode(p->value, &c.count, &c.data, errp);
        if (ok) {
            g_array_append_val(all, c);
        }
    }
    if (ok && handoff_early_place_many(s, (HandoffEarlyChunks *)all->data,
                                       all->len, errp)) {
        return;
    }
    for (i = 0; i < all->len; i++) {
        g_free(g_array_index(all, HandoffEarlyChunks, i).data);
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
