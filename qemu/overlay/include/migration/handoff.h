/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * VM handoff (qemu-handoff): what the rest of QEMU sees of it.
 *
 * Handoff is a live migration relative to a base VM that both sides hold.
 * It plugs into QEMU's migration core as one more SaveVMHandlers section
 * ("handoff") that carries the handoff engine's stream, plus a capability
 * and migration parameters. Everything here is called from the few hook
 * lines our patch queue adds to migration.c, ram.c, hmp-cmds.c and vl.c.
 */
#ifndef QEMU_MIGRATION_HANDOFF_H
#define QEMU_MIGRATION_HANDOFF_H

#include "qapi/qapi-types-migration.h"
#include "hw/qdev-properties.h"

/* Registers the "handoff" savevm section (next to ram_mig_init). */
void handoff_mig_init(void);

/* True while the handoff capability is enabled. */
bool migrate_use_handoff(void);

/*
 * A free page hint of virtio-balloon (ram.c's qemu_guest_free_page_hint
 * passes it on while the handoff capability is on; handoff-hint.c).
 */
void handoff_free_page_hint(void *addr, size_t len);

/* Capability rules; false with @errp set when @cap_list is invalid. */
bool handoff_caps_check(bool *cap_list, Error **errp);

/* Migration parameters handoff-*: the hooks of migration.c's parameter code. */
void handoff_params_init(MigrationParameters *params);
void handoff_params_query(const MigrationParameters *current,
                          MigrationParameters *out);
bool handoff_params_check(MigrationParameters *params, Error **errp);
void handoff_params_test_apply(MigrateSetParameters *params,
                               MigrationParameters *dest);
void handoff_params_apply(MigrateSetParameters *params,
                          MigrationParameters *current);

/* -global migration.handoff-*= works through these properties. */
#define DEFINE_HANDOFF_PROPERTIES(state, field)                            \
    DEFINE_PROP_STRING("handoff-base", state, field.handoff_base),         \
    DEFINE_PROP_STRING("handoff-compression", state,                       \
                       field.handoff_compression),                         \
    DEFINE_PROP_BOOL("handoff-delta", state, field.handoff_delta, true),   \
    DEFINE_PROP_UINT8("handoff-workers", state, field.handoff_workers, 0), \
    DEFINE_PROP_BOOL("handoff-random-order", state,                        \
                     field.handoff_random_order, true),                    \
    DEFINE_PROP_STRING("handoff-shared-disks", state,                      \
                       field.handoff_shared_disks)

/*
 * Return path: a destination tells the source why a handoff failed there
 * (a wrong base, a corrupt stream...), so that the source's error says so.
 */
void handoff_rp_error(MigrationState *s, const char *text, size_t len);

/*
 * The return path ended (error @err, or EOF) before the destination gave
 * its verdict: it exited or the link was cut. Named as such, since what
 * the outgoing stream runs into next is a closed socket.
 */
void handoff_rp_lost(MigrationState *s, int err);

/*
 * Migration thread: the outgoing stream failed. Lets the destination's
 * cause be recorded first when there is one (see handoff-return-path.c).
 */
void handoff_stream_failed(MigrationState *s);

/*
 * Destination checks (migration/savevm.c). A destination configured for a
 * handoff refuses sections the handoff replaces ("ram", "block": a plain
 * migration aimed at it), and refuses to finish loading unless the handoff
 * stream ended with its verified end record. Both return true / 0 when
 * handoff is not configured, and otherwise report the cause (also to the
 * source, over the return path).
 */
bool handoff_load_section_allowed(const char *idstr);
int handoff_load_verify(void);

/* query-migrate: adds the handoff member when a handoff ran. */
void handoff_fill_migration_info(MigrationInfo *info);

/* HMP pieces called from monitor/hmp-cmds.c. */
void hmp_handoff_set_parameter(Visitor *v, const char *name,
                               MigrationParameter parameter,
                               MigrateSetParameters *p, Error **errp);
void hmp_info_handoff_parameters(Monitor *mon, MigrationParameters *params);
void hmp_info_migrate_handoff(Monitor *mon, HandoffStats *stats);

/* The -handoff command-line option (softmmu/vl.c). */
void handoff_cli_parse(const char *optarg, Error **errp);
void handoff_cli_apply(bool incoming, Error **errp);
/*
 * -handoff overlay=FILE stands for an incoming migration from the overlay:
 * sets *@incoming and returns true then; -incoming as well is an error.
 */
bool handoff_cli_claims_incoming(const char **incoming, Error **errp);
/* How an early-start overlay's VM gets its segments. */
typedef struct HandoffEarlyStartOptions {
    bool on;                    /* early-start=on: it runs meanwhile */
    uint64_t rate;              /* x-early-rate, bytes/s, 0: unpaced */
    int feed_fd;                /* feed-fd, or -1: the file is whole */
    /*
     * With a feed, set by the overlay's loader: the header's digest, of
     * the file's bytes from @digest_from on, checked once every segment
     * is in (before that the file is not whole).
     */
    uint8_t digest[32];
    uint64_t digest_from, digest_bytes;
} HandoffEarlyStartOptions;

/*
 * -handoff early-start=on: the overlay's VM runs while its segments are
 * applied, in the background at x-early-rate bytes per second (0: as
 * fast as they come); feed-fd=N: they are still being written into the
 * overlay, and socket N says when each is in (handoff-early-feed.h).
 * False with @errp set if the options do not go together.
 */
bool handoff_cli_early_start(HandoffEarlyStartOptions *o, Error **errp);
/*
 * -handoff userfaultfd=PATH: /dev/userfaultfd, or /dev/fdset/N holding it
 * open, that userfaultfds come from (handoff-uffd.c); NULL if not given.
 */
const char *handoff_cli_userfaultfd(void);

/*
 * VM overlay files (migration/handoff-overlay-*.c) are the migration
 * transport of this URI scheme: handoff-overlay-save writes one, and an
 * incoming migration from one launches the VM it holds.
 */
#define HANDOFF_OVERLAY_URI "handoff-overlay:"
void handoff_overlay_start_outgoing(MigrationState *s, const char *path,
                                    Error **errp);
void handoff_overlay_start_incoming(const char *path, Error **errp);

#endif /* QEMU_MIGRATION_HANDOFF_H */
