/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The source side of the "handoff" savevm section, shared by its files:
 * handoff-save.c (setup, cleanup, the section's registration),
 * handoff-save-rounds.c (the rounds: dirty-log sync, when to switch
 * over, the last round), handoff-save-send.c (feeding the engine what a
 * round holds, draining its stream into the migration stream) and
 * handoff-save-stats.c (the statistics query-migrate shows).
 * Target-specific, like ram.c: a page is TARGET_PAGE_SIZE.
 */
#ifndef QEMU_MIGRATION_HANDOFF_SAVE_H
#define QEMU_MIGRATION_HANDOFF_SAVE_H

#include "handoff-internal.h"

/* Disk chunks read with one request. */
#define DISK_RUN_CHUNKS 256

#define CHUNKS_PER_PAGE (TARGET_PAGE_SIZE / HANDOFF_CHUNK_SIZE)

typedef struct HandoffBlock {
    RAMBlock *rb;
    uint32_t region;
    uint64_t pages;
    /*
     * Chunks of the round not offered yet. The guest agent's report takes
     * free ones out (sent as zeros); an item whose bit is clear is skipped.
     */
    unsigned long *pending;
    /*
     * Chunks whose last copy sent was a zero run for free memory (set by
     * a report, cleared when the chunk goes again as data): at the end,
     * exactly where the destination may hold zeros for the source's stale
     * bytes (trace handoff_save_free_final). A page sent free and written
     * afterwards is not among them: its write must have arrived.
     */
    unsigned long *sent_free;
} HandoffBlock;

/* One chunk to offer the engine: region and chunk index. */
typedef struct HandoffItem {
    uint32_t region;
    uint64_t index;
} HandoffItem;

typedef struct HandoffSaveState {
    HandoffBaseStore *store;
    HandoffEncoder *enc;
    bool random_order;
    /*
     * A segmented stream (an early-start overlay, handoff-overlay-save.c):
     * laid out by the engine at finish, its root handed to the overlay.
     */
    bool segmented;
    bool finished;              /* the engine's stream is complete */

    HandoffBlock *blocks;
    size_t n_blocks;

    HandoffDisks *disks;        /* [0] the base disk's overlay */
    BdrvDirtyBitmap **disk_dirty;   /* per disk */
    TrimMap *trim;              /* discards on disk [0] since the start */
    bool *disk_zero;            /* per chunk of disk_buf: reads as zeros */

    /* The round being sent: memory items (maybe shuffled), then disk. */
    GArray *round;
    size_t next;
    uint32_t iteration;
    uint64_t memory_sent, disk_sent;    /* chunks offered this round */

    /* The guest agent: the generation asked for (0: none). */
    uint64_t generation;
    uint64_t round_freed;       /* chunks taken out of the round ahead */
    uint64_t free_bytes;        /* guest memory sent as free, in all */
    uint64_t hinted_bytes;      /* of which virtio-balloon hinted */
    uint64_t agent_reports, agent_refused;  /* counters at the start */

    /* Throttling: dirtied vs sent since the previous round. */
    uint64_t bytes_at_round;
    int dirty_high;

    uint8_t *out;
    uint8_t *disk_buf;
    HandoffStats stats;
} HandoffSaveState;

/* The outgoing handoff, from its setup to its cleanup (NULL otherwise). */
extern HandoffSaveState *handoff_save_state;

/* handoff-save-rounds.c */
void handoff_save_start_round(HandoffSaveState *s);
void handoff_save_request_free_memory(HandoffSaveState *s);
int handoff_save_iterate(QEMUFile *f, void *opaque);
void handoff_save_pending(QEMUFile *f, void *opaque, uint64_t threshold,
                          uint64_t *res_precopy_only,
                          uint64_t *res_compatible,
                          uint64_t *res_postcopy_only);
int handoff_save_complete(QEMUFile *f, void *opaque);

/* handoff-save-send.c */
uint64_t handoff_save_socket_backlog(QEMUFile *f);
int handoff_save_drain_encoder(HandoffSaveState *s, QEMUFile *f, bool wait);
int handoff_save_engine_failed(QEMUFile *f, int rc, const char *what);
void handoff_save_clear_dirty_log(RAMBlock *rb, uint64_t page);
int handoff_save_send_round(HandoffSaveState *s, QEMUFile *f,
                            int64_t deadline, bool bql);

/* handoff-save-stats.c */
uint64_t handoff_save_remaining_bytes(HandoffSaveState *s, QEMUFile *f,
                                      const HandoffEncoderStats *st);
void handoff_save_update_stats(HandoffSaveState *s);

#endif /* QEMU_MIGRATION_HANDOFF_SAVE_H */
