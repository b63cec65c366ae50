/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A segmented handoff stream loaded as it arrives (handoff-load-segments.c).
 */
#ifndef QEMU_MIGRATION_HANDOFF_LOAD_SEGMENTS_H
#define QEMU_MIGRATION_HANDOFF_LOAD_SEGMENTS_H

#include "handoff.h"

/* Largest table part taken (the engine's own bounds allow more). */
#define HANDOFF_LOAD_TABLE_MAX (256 << 20)

typedef struct HandoffSegmentFeed HandoffSegmentFeed;

/*
 * Applies through @dec, authenticating the table part with @root; the
 * segments are read from the end of the overlay open as @fd (taken),
 * after the migration stream that starts at @stream_start, and
 * applied when the table part is in, unless @early: then early start
 * takes the table and the file (handoff_segment_feed_take) and applies
 * them while the VM runs.
 */
HandoffSegmentFeed *handoff_segment_feed_new(HandoffDecoder *dec,
                                             const uint8_t *root, int fd,
                                             uint64_t stream_start,
                                             bool early);
bool handoff_segment_feed_take(HandoffSegmentFeed *f,
                               HandoffSegmentTable **table, int *fd,
                               uint64_t *start);

/*
 * Reads segment @k of @table from @fd, whose segments begin at @start,
 * into @buf (HANDOFF_SEGMENT_MAX_BYTES); *@len is its length.
 */
bool handoff_segment_read(int fd, const HandoffSegmentTable *table,
                          uint64_t start, uint32_t k, uint8_t *buf,
                          uint32_t *len, Error **errp);
/* The next @len stream bytes; false with @errp naming the cause. */
bool handoff_segment_feed(HandoffSegmentFeed *f, const uint8_t *data,
                          size_t len, Error **errp);
/* At the end of the stream: every segment in, none in part. */
bool handoff_segment_feed_done(HandoffSegmentFeed *f, Error **errp);
void handoff_segment_feed_free(HandoffSegmentFeed *f);

#endif /* QEMU_MIGRATION_HANDOFF_LOAD_SEGMENTS_H */
