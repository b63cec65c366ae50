/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Working-set recording: the first touch of each page, in order
 * (handoff-record.c), and the file it is written to (handoff-record-file.c).
 */
#ifndef MIGRATION_HANDOFF_RECORD_H
#define MIGRATION_HANDOFF_RECORD_H

/*
 * The order file's first line (docs/overlay-format.md, "Working-set
 * order"), a comment to `qemu-handoff encode --order`, which reads the
 * lines after it; python/qemu_handoff/formats/working_set.py reads it
 * here.
 */
#define HANDOFF_RECORD_MAGIC "# qemu-handoff-working-set 1"

typedef struct HandoffRecordEntry {
    uint32_t region;            /* in the base's geometry */
    uint64_t chunk;             /* 4 KiB chunk within the region */
    int64_t ns;                 /* since the recording started */
} HandoffRecordEntry;

/*
 * The disk's first touches (handoff-record-disk.c): a log-only filter over
 * the base disk's overlay from start to stop. Stop appends the entries,
 * in order and with times since @t0, to @entries (NULL: none).
 */
typedef struct HandoffRecordDisk HandoffRecordDisk;
HandoffRecordDisk *handoff_record_disk_start(HandoffBaseStore *store,
                                             Error **errp);
void handoff_record_disk_stop(HandoffRecordDisk *d, int64_t t0,
                              GArray *entries);

/*
 * Writes @n entries to @fd, in order, each region by its name in @base,
 * and syncs it.
 */
bool handoff_record_write(int fd, const HandoffBase *base,
                          const HandoffRecordEntry *order, uint64_t n,
                          Error **errp);

#endif
