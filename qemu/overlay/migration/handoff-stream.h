/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * How the handoff engine's stream rides inside the migration stream, and
 * the destination's half of the "handoff" savevm section.
 */
#ifndef QEMU_MIGRATION_HANDOFF_STREAM_H
#define QEMU_MIGRATION_HANDOFF_STREAM_H

#include "migration/handoff.h"
#include "migration/qemu-file-types.h"

#define HANDOFF_SECTION_VERSION 1

/* Block kinds inside a section part. */
#define HANDOFF_BLOCK_EOS  0    /* end of this section part */
#define HANDOFF_BLOCK_DATA 1    /* be32 length, then engine stream bytes */
#define HANDOFF_BLOCK_END  2    /* the engine stream is complete */

/* Largest DATA block a source sends and a destination accepts. */
#define HANDOFF_BLOCK_MAX (1 << 20)

/*
 * The incoming stream is an early-start overlay's (handoff-overlay-file.c):
 * segmented, its table part authenticated by @root, which the overlay's
 * checked description names, in the migration stream, and its segments at
 * the end of the overlay open as @fd (taken), after its migration stream,
 * which starts at @stream_start. Any other stream is loaded
 * as one piece. With @early->on, the VM runs while the segments are
 * applied (handoff-early-start.c) as @early says.
 */
void handoff_load_expect_segmented(const uint8_t *root, int fd,
                                   uint64_t stream_start,
                                   const HandoffEarlyStartOptions *early);

int handoff_load_setup(QEMUFile *f, void *opaque);
int handoff_load_state(QEMUFile *f, void *opaque, int version_id);
int handoff_load_cleanup(void *opaque);

#endif /* QEMU_MIGRATION_HANDOFF_STREAM_H */
