/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Working-set recording: the first touch of each page, in order
 * (handoff-record.c), and the file it is written to (handoff-record-file.c).
 */
#ifndef MIGRATION_HANDOFF_RECORD_H
#define MIGRATION_HANDOFF_RECORD_H

typedef struct HandoffRecordEntry {
    uint32_t region;            /* in the base's geometry */
    uint64_t chunk;             /* 4 KiB chunk within the region */
    int64_t ns;                 /* since the recording started */
} HandoffRecordEntry;

/* Writes @n entries to @path (created, or truncated), in order. */
bool handoff_record_write(const char *path, const HandoffRecordEntry *order,
                          uint64_t n, Error **errp);

#endif
