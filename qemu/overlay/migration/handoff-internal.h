/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared between the QEMU-side handoff files (migration/handoff-*.c).
 */
#ifndef QEMU_MIGRATION_HANDOFF_INTERNAL_H
#define QEMU_MIGRATION_HANDOFF_INTERNAL_H

#include "handoff.h"            /* the engine's C API (libhandoff) */
#include "qapi/qapi-types-handoff.h"
#include "sysemu/block-backend.h"

/*
 * @config: the engine's defaults with handoff-compression @text ("auto",
 * NULL or a mode name) and handoff-delta @delta applied. The policy
 * (auto's start mode, the XOR rule) is the engine's:
 * handoff_encoder_config_set_compression.
 */
bool handoff_compression_config(const char *text, bool delta,
                                HandoffEncoderConfig *config, Error **errp);

/*
 * Capability handoff and the return path it needs, in one go
 * (handoff-params.c; migrate-handoff and -handoff both enable it).
 */
bool handoff_enable_capability(Error **errp);

/*
 * Whether migration parameter handoff-shared-disks (@list) names the disk
 * whose drive is @drive or whose device is @device.
 */
bool handoff_disk_is_shared(const char *list, const char *drive,
                            const char *device);

/* One RAM block of a base as recorded in its manifest. */
typedef struct HandoffBaseMemory {
    char *name;                 /* RAMBlock idstr */
    char *file;                 /* raw image of its bytes, relative */
    uint64_t size;              /* the block's used_length when saved */
    uint32_t region;            /* region number in the engine's geometry */
} HandoffBaseMemory;

/*
 * A base directory, opened: manifest (base.json), engine index (index),
 * memory images (memory/N.raw), disk (disk.raw), device state
 * (devices.vmstate).
 */
typedef struct HandoffBaseStore {
    char *dir;
    char *machine;              /* QOM type of the machine saved */
    HandoffBase *base;          /* the engine's view: index, mapped files */
    char id[33];                /* content ID, hex */
    HandoffBaseMemory *memory;
    size_t n_memory;
    char *disk_file;            /* relative to dir, as in the index */
    char *disk_path;            /* dir + disk_file */
    uint64_t disk_size;
    uint32_t disk_region;
    char *devices_path;
    QDict *layout;              /* devices saved with (handoff-layout.c) */
} HandoffBaseStore;

/* Base directory layout. */
#define HANDOFF_BASE_MANIFEST "base.json"
#define HANDOFF_BASE_INDEX "index"
#define HANDOFF_BASE_DISK "disk.raw"
#define HANDOFF_BASE_DEVICES "devices.vmstate"
#define HANDOFF_BASE_DISK_REGION "disk"

HandoffBaseStore *handoff_base_store_open(const char *dir, Error **errp);
void handoff_base_store_free(HandoffBaseStore *store);

/*
 * The manifest (handoff-manifest.c): @text (at most this long) parsed,
 * its fields checked into @store, then bound to the regions of
 * @store->base: each memory block and the disk to the index region of
 * its name, kind, size and file, every region once.
 */
#define HANDOFF_MANIFEST_MAX_BYTES (1 << 20)
QDict *handoff_manifest_from_text(const char *path, const char *text,
                                  Error **errp);
bool handoff_manifest_parse(HandoffBaseStore *store, QDict *manifest,
                            Error **errp);
bool handoff_manifest_bind(HandoffBaseStore *store, Error **errp);
/* Re-hashes the base's files (once per process unless @force). */
void handoff_base_trust_verified(const char *dir, const char *id);
bool handoff_base_store_verify(HandoffBaseStore *store, bool force,
                               Error **errp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HandoffBaseStore, handoff_base_store_free)

/* Checks that this VM's RAM blocks are the base's (names and sizes). */
bool handoff_base_check_ram(HandoffBaseStore *store, Error **errp);

/* The BlockBackend whose image is a qcow2 overlay on the base's disk. */
BlockBackend *handoff_base_find_disk(HandoffBaseStore *store, Error **errp);

/* Copies the base's memory images into this VM's RAM blocks. */
bool handoff_base_load_ram(HandoffBaseStore *store, Error **errp);

/* -handoff base=DIR,resume=on: RAM and device state from the base. */
void handoff_base_resume(const char *dir, Error **errp);

/* Sets @errp from the engine's last failure (code name + cause). */
void handoff_error_engine(Error **errp, int code, const char *what);

/*
 * The device layout of a base (handoff-layout.c): recorded when it is
 * created, checked before a VM resumes from it, so that no device state
 * goes to another device.
 */
QDict *handoff_layout_save(BlockBackend *disk);
bool handoff_layout_check(QDict *layout, BlockBackend *disk, Error **errp);

/*
 * The disks a handoff carries (handoff-disks.c): [0] the overlay on the
 * base disk, then every other writable disk not declared shared, each a
 * region of the base extended by them (they read as zeros in the base).
 */
typedef struct HandoffDisk {
    BlockBackend *blk;
    uint32_t region;            /* in the stream's geometry */
    uint64_t size;
    char *region_name;
    bool is_base;               /* the overlay on the base disk */
} HandoffDisk;

typedef struct HandoffDisks {
    HandoffDisk *disk;
    size_t n;
    HandoffBase *base;          /* what the stream is made against */
    HandoffBase *extended;      /* owned, when there are extra disks */
} HandoffDisks;

HandoffDisks *handoff_disks_collect(HandoffBaseStore *store, Error **errp);
HandoffDisk *handoff_disks_find(HandoffDisks *disks, uint32_t region);
bool handoff_disks_check_empty(HandoffDisk *d, Error **errp);
void handoff_disks_free(HandoffDisks *disks);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HandoffDisks, handoff_disks_free)

/*
 * Discards on the handed-off disk (handoff-trim.c). The map says which
 * chunks the guest discarded since handoff_trim_start(); a range it names
 * must still be confirmed to read as zeros before it is sent as such.
 */
typedef struct TrimMap TrimMap;
void handoff_trim_init(void);
bool handoff_trim_discards_reach_image(BlockBackend *blk);
void handoff_trim_warn_if_ignored(BlockBackend *blk);
TrimMap *handoff_trim_start(BlockBackend *blk, uint64_t disk_bytes,
                            Error **errp);
void handoff_trim_stop(void);
uint64_t handoff_trim_discarded_bytes(TrimMap *map);

/*
 * The guest agent's port (handoff-agent.c, -device handoff-agent). A
 * report answers the request of one generation and is taken for that
 * generation only; its extents are checked pieces of writable guest RAM.
 */
typedef struct HandoffFreeExtent {
    RAMBlock *rb;
    uint64_t offset;            /* in rb */
    uint64_t bytes;
} HandoffFreeExtent;

bool handoff_agent_present(void);
/* With the BQL. Whether the request reached a listening guest. */
bool handoff_agent_request(uint64_t generation);
/* Any thread. A GArray of HandoffFreeExtent, or NULL. */
GArray *handoff_agent_take_report(uint64_t generation);
/* Any thread. No report is taken from now on (until the next request). */
void handoff_agent_forget(void);
void handoff_agent_counters(uint64_t *reports, uint64_t *refused);

/*
 * Page classes (handoff-agent-classes.c) ride on the agent's port, main
 * loop only. The port frames the answer and hands it to the sink its
 * request named: it calls nothing of the page-class map by name, so the
 * map is a client of the port and never the other way round.
 */
typedef struct HandoffAgentClassesSink {
    /* Whether the map of @generation is the one awaited. */
    bool (*expected)(uint64_t generation);
    /* Bytes and end of the map of @generation, once it was expected. */
    void (*data)(uint64_t generation, const uint8_t *buf, size_t len);
    void (*end)(uint64_t generation, uint64_t pages);
} HandoffAgentClassesSink;

/* Sends the request of @generation; its answer will go to @sink. */
bool handoff_agent_request_classes(uint64_t generation,
                                   const HandoffAgentClassesSink *sink,
                                   Error **errp);

/*
 * virtio-balloon free page hints (handoff-hint.c): kept for the round of
 * @generation only. Extents as the agent's, of guest RAM.
 */
bool handoff_hints_possible(void);     /* a balloon with free-page-hint */
void handoff_hints_accept(uint64_t generation);
void handoff_hints_stop(void);
GArray *handoff_hints_take(uint64_t generation);

/* Last statistics of an outgoing handoff, kept after it ends. */
void handoff_stats_publish(const HandoffStats *stats);

/*
 * A non-blocking userfaultfd (handoff-uffd.c): from the device -handoff
 * userfaultfd= names, else the system call; -1 with @errp naming @what
 * needs it.
 */
int handoff_uffd_create(const char *what, Error **errp);

#endif /* QEMU_MIGRATION_HANDOFF_INTERNAL_H */
