/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * VM overlay files (docs/overlay-format.md): what a cloudlet needs to turn
 * a base it holds into a user's VM. A fixed header, a description of the
 * VM (JSON: base, machine, disks, command-line fragment, creation record),
 * then the handoff migration stream of the VM against the base.
 *
 * The layout is defined here and in docs/overlay-format.md only; the
 * synthesis service (python/qemu_handoff/formats/overlay.py) reads the same
 * bytes, and tests/integration/test_synthesis.py checks that both agree.
 */
#ifndef QEMU_MIGRATION_HANDOFF_OVERLAY_H
#define QEMU_MIGRATION_HANDOFF_OVERLAY_H

#include "migration/handoff.h"
#include "qapi/qmp/qdict.h"
#include "handoff-internal.h"

#define HANDOFF_OVERLAY_MAGIC "QHOVRLAY"
#define HANDOFF_OVERLAY_MAGIC_BYTES 8
#define HANDOFF_OVERLAY_VERSION 1
#define HANDOFF_OVERLAY_HEADER_BYTES 64
#define HANDOFF_OVERLAY_DIGEST_BYTES 32            /* SHA-256 */
#define HANDOFF_OVERLAY_DESCRIPTION_MAX (1 << 20)
/* Mode an overlay is compressed with unless the operator names one. */
#define HANDOFF_OVERLAY_DEFAULT_COMPRESSION "lzma-6"

/*
 * Header, big-endian:
 *   0  magic "QHOVRLAY"        8 bytes
 *   8  version                 u32
 *  12  description bytes       u32 (JSON, at most 1 MiB, follows the header)
 *  16  stream bytes            u64 (0 while the overlay is being written)
 *  24  SHA-256                 32 bytes, of the description then the stream
 *  56  reserved, zero          8 bytes
 */
typedef struct HandoffOverlayHeader {
    uint32_t version;
    uint32_t description_bytes;
    uint64_t stream_bytes;
    uint8_t digest[HANDOFF_OVERLAY_DIGEST_BYTES];
} HandoffOverlayHeader;

void handoff_overlay_header_encode(const HandoffOverlayHeader *h,
                                   uint8_t out[HANDOFF_OVERLAY_HEADER_BYTES]);
bool handoff_overlay_header_decode(const uint8_t in[HANDOFF_OVERLAY_HEADER_BYTES],
                                   HandoffOverlayHeader *h, Error **errp);

/* An overlay file opened for launching, its stream verified. */
typedef struct HandoffOverlayFile {
    int fd;                     /* positioned at the stream's first byte */
    HandoffOverlayHeader header;
    QDict *description;
} HandoffOverlayFile;

/*
 * Opens @path, checks the header, reads and parses the description and
 * hashes it and the whole stream against the header's digest: a
 * truncated, unfinished or corrupted overlay is refused before a byte is
 * applied. With @defer_digest (an early start whose segments are still
 * being written) only the sizes are checked: the caller checks the
 * digest once the file is whole.
 */
HandoffOverlayFile *handoff_overlay_file_open(const char *path,
                                              bool defer_digest,
                                              Error **errp);
void handoff_overlay_file_free(HandoffOverlayFile *file);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HandoffOverlayFile, handoff_overlay_file_free)

/*
 * The description (handoff-overlay-describe.c): made from this VM when an
 * overlay is saved; checked against this VM (machine and base) before
 * one is loaded, naming the first field that differs.
 */
QDict *handoff_overlay_describe(HandoffBaseStore *store, HandoffDisks *disks,
                                const char *compression);
bool handoff_overlay_check(QDict *description, HandoffBaseStore *store,
                           Error **errp);

/*
 * The machine as data (handoff-overlay-machine.c): machine type, RAM,
 * CPUs, boot files by name, serial ports, and each device the user made
 * with the properties that differ from its defaults, host resources named
 * by kind only. A cloudlet builds the command line from it through its own
 * allowlist; no text of the overlay reaches its QEMU's option parser.
 * Version 1 descriptions carried a command-line fragment ("args") instead.
 */
#define HANDOFF_OVERLAY_DESCRIPTION_VERSION 2
void handoff_overlay_describe_machine(QDict *description, HandoffDisks *disks);

/*
 * Early start (handoff-overlay-early.c, docs/overlay-format.md "Early
 * start"): the description's "early-start" object says the stream is a
 * segmented engine stream and names its root, which the description's
 * digest thereby covers.
 */
#define HANDOFF_OVERLAY_EARLY_START "early-start"
#define HANDOFF_OVERLAY_SEGMENTED_STREAM 3          /* engine stream version */
#define HANDOFF_OVERLAY_ROOT_HEX (2 * HANDOFF_ROOT_SIZE)

/*
 * "segments-bytes", the segments' total, is written as 20 characters: the
 * number, then spaces (JSON's whitespace), so that it fits in place of
 * its placeholder whatever its value.
 */
#define HANDOFF_OVERLAY_SEGMENTS_BYTES_WIDTH 20

/*
 * Adds "early-start" with placeholders (root zeros, segments-bytes
 * 10^19) to @description.
 */
void handoff_overlay_describe_early_start(QDict *description,
                                          uint64_t order_chunks);
/* Where in @json the placeholders are filled in; -1 unless once each. */
ssize_t handoff_overlay_root_offset(const char *json);
ssize_t handoff_overlay_segments_bytes_offset(const char *json);
void handoff_overlay_root_hex(const uint8_t root[HANDOFF_ROOT_SIZE],
                              char hex[HANDOFF_OVERLAY_ROOT_HEX + 1]);
/*
 * Reads "early-start" of a loaded overlay's description: *@segmented and
 * @root when present, nothing when absent; a malformed one is refused.
 */
bool handoff_overlay_early_start(QDict *description, bool *segmented,
                                 uint8_t root[HANDOFF_ROOT_SIZE],
                                 Error **errp);

/*
 * The overlay save being made, for the handoff section's source side:
 * whether its stream is segmented, and with which order (valid until the
 * save ends); the finished stream's root and its segments, handed back:
 * @stream (taken) from @from on, written after the migration stream.
 */
bool handoff_overlay_save_order(const HandoffChunkRef **order,
                                size_t *count);
void handoff_overlay_save_set_segments(const uint8_t root[HANDOFF_ROOT_SIZE],
                                       GByteArray *stream, size_t from);

#endif /* QEMU_MIGRATION_HANDOFF_OVERLAY_H */
