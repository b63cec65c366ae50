/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Early start (handoff-early-start.c): the VM runs while the segments of
 * its early-start overlay are still being applied.
 */
#ifndef QEMU_MIGRATION_HANDOFF_EARLY_START_H
#define QEMU_MIGRATION_HANDOFF_EARLY_START_H

#include "handoff.h"
#include "handoff-internal.h"

/*
 * What the load hands over once the segmented stream's table part is in
 * (handoff-load.c): the decoder and what its writer writes into, the
 * table, the overlay and where its segments start. @release frees the
 * load's state (main thread) once every segment is applied.
 */
typedef struct HandoffEarlyStartLoad {
    HandoffDecoder *dec;
    HandoffSegmentTable *table;
    int fd;
    uint64_t start;
    HandoffBaseStore *store;
    HandoffDisks *disks;
    uint8_t **host;             /* per region: its RAM, NULL for a disk */
    uint64_t *size;             /* per region, bytes */
    size_t n_regions;
    HandoffEarlyStartOptions options;   /* the rate, the feed */
    void (*release)(void *opaque);
    void *opaque;
} HandoffEarlyStartLoad;

typedef struct HandoffEarlyStart HandoffEarlyStart;

/*
 * Main thread, in the incoming migration, before the device state loads:
 * registers what RAM the segments carry with userfaultfd and empties it,
 * puts a handoff-early filter over each carried disk with its carried
 * chunks absent, and starts the thread that applies the segments, those
 * something waits for first, the rest in file order. *@out is set before
 * that thread runs. On failure the caller keeps what @load names.
 */
bool handoff_early_start_begin(const HandoffEarlyStartLoad *load,
                               HandoffEarlyStart **out, Error **errp);

/* The decoder's writer, for each chunk a segment gives (that thread). */
int handoff_early_start_write(HandoffEarlyStart *es, uint32_t region,
                              uint64_t index, const void *data);

#endif /* QEMU_MIGRATION_HANDOFF_EARLY_START_H */
