/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The segment feed of an early start: the socket on which whoever writes
 * the overlay's segments into its file says which are in, and hears
 * which are wanted (protocol in handoff-early-feed.h). Only the early
 * start thread uses it.
 *
 * The sender is trusted no more than the overlay: a message that is not
 * the protocol's, or names a segment the table lacks, is refused by
 * name, and nothing it says is believed about the bytes, which are
 * checked against the table when read from the file.
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/atomic.h"
#include "qemu/bswap.h"
#include <poll.h>
#include "handoff-early-feed.h"
#include "handoff-internal.h"

struct HandoffEarlyFeed {
    int fd;
    uint32_t count;
    uint8_t *wanted;            /* per segment, each wanted once */
    uint32_t n_wanted, n_arrived;
    uint8_t partial[HANDOFF_EARLY_FEED_MESSAGE_BYTES];
    size_t have;                /* bytes of a message read so far */
    /*
     * Per segment: whole in the file, a HAVE taken. The early start's own
     * array, borrowed: one record of what is in, which it reads too.
     */
    uint8_t *arrived;
    /*
     * WANTs not written yet: the thread never blocks on the sender, which
     * may itself be blocked writing HAVEs the thread has not read. At
     * most one per segment.
     */
    GByteArray *out;
};

/* The layout, once, before anything else: a blocking write is fine. */
static bool write_all(int fd, const uint8_t *buf, size_t len, Error **errp)
{
    while (len) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };

            poll(&p, 1, -1);
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EPIPE,
                             "early start: segment feed: cannot write");
            return false;
        }
        buf += n;
        len -= n;
    }
    return true;
}

static bool write_layout(HandoffEarlyFeed *feed,
                         const HandoffSegmentTable *table, uint64_t start,
                         Error **errp)
{
    size_t len = HANDOFF_EARLY_FEED_LAYOUT_HEADER_BYTES +
                 (size_t)feed->count * HANDOFF_EARLY_FEED_LAYOUT_ENTRY_BYTES;
    g_autofree uint8_t *buf = g_malloc0(len);
    uint8_t *p = buf + HANDOFF_EARLY_FEED_LAYOUT_HEADER_BYTES;
    uint32_t k;

    stl_be_p(buf, HANDOFF_EARLY_FEED_MAGIC);
    stl_be_p(buf + 4, HANDOFF_EARLY_FEED_VERSION);
    stl_be_p(buf + 8, feed->count);
    stq_be_p(buf + 16, start);
    for (k = 0; k < feed->count; k++) {
        uint64_t offset;
        uint32_t length;
        int rc = handoff_segment_table_entry(table, k, &offset, &length,
                                             NULL, NULL, 0, NULL);

        if (rc < 0) {
            error_setg(errp, "early start: segment feed: %s",
                       handoff_error_name(rc));
            return false;
        }
        stq_be_p(p, start + offset);
        stl_be_p(p + 8, length);
        p += HANDOFF_EARLY_FEED_LAYOUT_ENTRY_BYTES;
    }
    return write_all(feed->fd, buf, len, errp);
}

HandoffEarlyFeed *handoff_early_feed_new(int fd,
                                         const HandoffSegmentTable *table,
                                         uint64_t start, uint8_t *arrived,
                                         Error **errp)
{
    HandoffEarlyFeed *feed = g_new0(HandoffEarlyFeed, 1);
    struct stat st;
    int flags;

    feed->fd = fd;
    feed->count = handoff_segment_table_count(table);
    feed->wanted = g_new0(uint8_t, feed->count);
    feed->arrived = arrived;
    feed->out = g_byte_array_new();
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        error_setg(errp, "early start: feed-fd=%d is not an open socket", fd);
        goto fail;
    }
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        error_setg_errno(errp, errno, "early start: segment feed");
        goto fail;
    }
    if (!write_layout(feed, table, start, errp)) {
        goto fail;
    }
    return feed;

fail:
    handoff_early_feed_free(feed);
    return NULL;
}

void handoff_early_feed_free(HandoffEarlyFeed *feed)
{
    if (feed) {
        if (feed->fd >= 0) {
            close(feed->fd);
        }
        g_free(feed->wanted);
        g_byte_array_free(feed->out, true);
        g_free(feed);
    }
}

int handoff_early_feed_fd(const HandoffEarlyFeed *feed)
{
    return feed->fd;
}

static bool take_message(HandoffEarlyFeed *feed, Error **errp)
{
    uint32_t kind = ldl_be_p(feed->partial);
    uint32_t k = ldl_be_p(feed->partial + 4);

    if (kind != HANDOFF_EARLY_FEED_HAVE) {
        error_setg(errp, "early start: segment feed: message kind %u, "
                   "expected HAVE (%u)", kind, HANDOFF_EARLY_FEED_HAVE);
        return false;
    }
    if (k >= feed->count) {
        error_setg(errp, "early start: segment feed: HAVE names segment %u "
                   "of %u", k, feed->count);
        return false;
    }
    if (!feed->arrived[k]) {
        feed->arrived[k] = 1;
        qatomic_inc(&feed->n_arrived);
    }
    return true;
}

bool handoff_early_feed_read(HandoffEarlyFeed *feed, Error **errp)
{
    while (feed->fd >= 0) {
        ssize_t n = read(feed->fd, feed->partial + feed->have,
                         sizeof(feed->partial) - feed->have);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return true;
        }
        if (n <= 0) {
            if (n < 0 || feed->have || feed->n_arrived < feed->count) {
                error_setg(errp, "early start: segment feed %s with %u of "
                           "%u segments in", n < 0 ? "failed" : "closed",
                           feed->n_arrived, feed->count);
                return false;
            }
            close(feed->fd);
            feed->fd = -1;
            return true;
        }
        feed->have += n;
        if (feed->have == sizeof(feed->partial)) {
            feed->have = 0;
            if (!take_message(feed, errp)) {
                return false;
            }
        }
    }
    return true;
}

bool handoff_early_feed_want(HandoffEarlyFeed *feed, uint32_t k,
                             Error **errp)
{
    uint8_t msg[HANDOFF_EARLY_FEED_MESSAGE_BYTES];

    if (k >= feed->count || feed->wanted[k] || feed->arrived[k] ||
        feed->fd < 0) {
        return true;
    }
    feed->wanted[k] = 1;
    qatomic_inc(&feed->n_wanted);
    stl_be_p(msg, HANDOFF_EARLY_FEED_WANT);
    stl_be_p(msg + 4, k);
    g_byte_array_append(feed->out, msg, sizeof(msg));
    return handoff_early_feed_flush(feed, errp);
}

bool handoff_early_feed_flush(HandoffEarlyFeed *feed, Error **errp)
{
    while (feed->out->len && feed->fd >= 0) {
        ssize_t n = write(feed->fd, feed->out->data, feed->out->len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return true;        /* the rest when the socket takes it */
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : EPIPE,
                             "early start: segment feed: cannot write");
            return false;
        }
        g_byte_array_remove_range(feed->out, 0, n);
    }
    return true;
}

bool handoff_early_feed_pending(const HandoffEarlyFeed *feed)
{
    return feed->out->len && feed->fd >= 0;
}

uint32_t handoff_early_feed_wanted(const HandoffEarlyFeed *feed)
{
    return qatomic_read(&feed->n_wanted);
}

uint32_t handoff_early_feed_arrived(const HandoffEarlyFeed *feed)
{
    return qatomic_read(&feed->n_arrived);
}
