/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The segment feed of an early start (-handoff ...,early-start=on,
 * feed-fd=N): the overlay's segments are written into its file while the
 * VM runs, by whoever started QEMU (the synthesis service, a test), and
 * this connected stream socket says which are in and which are wanted.
 * The bytes themselves are read from the file and checked against the
 * authenticated table, as from a whole file; the feed only says when.
 *
 * This header is the protocol's one definition; Python reads it
 * (scripts/qemu_handoff/formats/early_feed.py). Every integer is
 * big-endian.
 *
 * QEMU first writes the layout, from the authenticated table:
 *   magic, version, count, 0 (u32 each), segments start (u64), then per
 *   segment its offset in the file (u64), its length, 0 (u32 each).
 * Then messages of HANDOFF_EARLY_FEED_MESSAGE_BYTES, kind and segment
 * (u32 each):
 *   HAVE k (to QEMU): segment k is in the file, whole. Once is enough.
 *   WANT k (from QEMU): something waits for segment k; send it next.
 *     Each segment is wanted at most once, its dependencies first.
 * The sender closes the socket only once every segment is in: an end
 * before that ends QEMU, the segments still missing named.
 */
#ifndef QEMU_MIGRATION_HANDOFF_EARLY_FEED_H
#define QEMU_MIGRATION_HANDOFF_EARLY_FEED_H

#define HANDOFF_EARLY_FEED_MAGIC 0x51484546u /* "QHEF" */
#define HANDOFF_EARLY_FEED_VERSION 1u
#define HANDOFF_EARLY_FEED_LAYOUT_HEADER_BYTES 24
#define HANDOFF_EARLY_FEED_LAYOUT_ENTRY_BYTES 16
#define HANDOFF_EARLY_FEED_MESSAGE_BYTES 8
#define HANDOFF_EARLY_FEED_HAVE 1u
#define HANDOFF_EARLY_FEED_WANT 2u

#ifndef HANDOFF_EARLY_FEED_CONSTANTS_ONLY
#include "handoff.h"

typedef struct HandoffEarlyFeed HandoffEarlyFeed;

/*
 * Takes @fd, a connected stream socket, and writes the layout of @table's
 * segments, which start at @start in the overlay. @arrived (one byte per
 * segment, zeroed, the caller's and outliving the feed) is where the feed
 * records each segment the sender says is in.
 */
HandoffEarlyFeed *handoff_early_feed_new(int fd,
                                         const HandoffSegmentTable *table,
                                         uint64_t start, uint8_t *arrived,
                                         Error **errp);
void handoff_early_feed_free(HandoffEarlyFeed *feed);
/* The socket, for poll(); -1 once the sender closed it. */
int handoff_early_feed_fd(const HandoffEarlyFeed *feed);
/*
 * Reads what the sender said without blocking, setting arrived[k] for
 * each HAVE k; false on a message that is not the protocol's or a socket
 * closed with segments still missing, @errp naming it.
 */
bool handoff_early_feed_read(HandoffEarlyFeed *feed, Error **errp);
/*
 * WANT @k, once per segment (later calls for it do nothing). Written as
 * far as the socket takes it without blocking; flush the rest when it is
 * writable (handoff_early_feed_pending says whether to wait for that).
 */
bool handoff_early_feed_want(HandoffEarlyFeed *feed, uint32_t k,
                             Error **errp);
bool handoff_early_feed_flush(HandoffEarlyFeed *feed, Error **errp);
bool handoff_early_feed_pending(const HandoffEarlyFeed *feed);
/* Counters: segments wanted, segments the sender said are in. */
uint32_t handoff_early_feed_wanted(const HandoffEarlyFeed *feed);
uint32_t handoff_early_feed_arrived(const HandoffEarlyFeed *feed);
#endif

#endif /* QEMU_MIGRATION_HANDOFF_EARLY_FEED_H */
