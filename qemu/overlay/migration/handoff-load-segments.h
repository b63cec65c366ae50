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
 * segments are read from the end of the overlay open as @fd (taken).
 */
HandoffSegmentFeed *handoff_segment_feed_new(HandoffDecoder *dec,
                                             const uint8_t *root, int fd);
/* The next @len stream bytes; false with @errp naming the cause. */
bool handoff_segment_feed(HandoffSegmentFeed *f, const uint8_t *data,
                          size_t len, Error **errp);
/* At the end of the stream: every segment in, none in part. */
bool handoff_segment_feed_done(HandoffSegmentFeed *f, Error **errp);
void handoff_segment_feed_free(HandoffSegmentFeed *f);

#endif /* QEMU_MIGRATION_HANDOFF_LOAD_SEGMENTS_H */
