/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The -handoff command-line option: base=DIR and the other handoff
 * parameters set as migrate-set-parameters would, capability handoff
 * enabled, resume=on starting the VM from its base, overlay=FILE standing
 * for an incoming migration from a VM overlay file.
 */
#include "qemu/osdep.h"
#include "migration/handoff.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-migration.h"
#include "qemu/config-file.h"
#include "qemu/option.h"
#include "handoff-internal.h"

static QemuOptsList qemu_handoff_opts = {
    .name = "handoff",
    .implied_opt_name = "base",
    .merge_lists = true,
    .head = QTAILQ_HEAD_INITIALIZER(qemu_handoff_opts.head),
    .desc = {
        { .name = "base", .type = QEMU_OPT_STRING },
        { .name = "resume", .type = QEMU_OPT_BOOL },
        { .name = "compression", .type = QEMU_OPT_STRING },
        { .name = "delta", .type = QEMU_OPT_BOOL },
        { .name = "workers", .type = QEMU_OPT_NUMBER },
        { .name = "random-order", .type = QEMU_OPT_BOOL },
        { .name = "shared-disks", .type = QEMU_OPT_STRING },
        { .name = "overlay", .type = QEMU_OPT_STRING },
        { .name = "verified-id", .type = QEMU_OPT_STRING },
        { .name = "early-start", .type = QEMU_OPT_BOOL },
        { .name = "x-early-rate", .type = QEMU_OPT_SIZE },
        { .name = "feed-fd", .type = QEMU_OPT_NUMBER },
        { .name = "userfaultfd", .type = QEMU_OPT_STRING },
        { /* end of list */ }
    },
};

void handoff_cli_parse(const char *optarg, Error **errp)
{
    if (!qemu_opts_parse_noisily(&qemu_handoff_opts, optarg, false)) {
        error_setg(errp, "Invalid -handoff option '%s'", optarg);
    }
}

bool handoff_cli_early_start(HandoffEarlyStartOptions *o, Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_handoff_opts, NULL);
    uint64_t fd = opts ? qemu_opt_get_number(opts, "feed-fd", UINT64_MAX)
                       : UINT64_MAX;

    memset(o, 0, sizeof(*o));
    o->on = opts && qemu_opt_get_bool(opts, "early-start", false);
    o->rate = opts ? qemu_opt_get_size(opts, "x-early-rate", 0) : 0;
    o->feed_fd = -1;
    if (fd == UINT64_MAX) {
        return true;
    }
    if (!o->on) {
        error_setg(errp, "-handoff feed-fd= feeds an early start: it needs "
                   "early-start=on");
        return false;
    }
    if (fd > INT_MAX) {
        error_setg(errp, "-handoff feed-fd=%" PRIu64 ": not a file "
                   "descriptor", fd);
        return false;
    }
    o->feed_fd = fd;
    return true;
}

const char *handoff_cli_userfaultfd(void)
{
    QemuOpts *opts = qemu_opts_find(&qemu_handoff_opts, NULL);

    return opts ? qemu_opt_get(opts, "userfaultfd") : NULL;
}

bool handoff_cli_claims_incoming(const char **incoming, Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_handoff_opts, NULL);
    const char *overlay = opts ? qemu_opt_get(opts, "overlay") : NULL;
    static char *uri;

    if (!overlay) {
        return false;
    }
    if (*incoming) {
        error_setg(errp, "-handoff overlay= launches the VM from its "
                   "overlay: it cannot be combined with -incoming");
        return false;
    }
    g_free(uri);
    uri = g_strdup_printf(HANDOFF_OVERLAY_URI "%s", overlay);
    *incoming = uri;
    return true;
}

/*
 * verified-id=ID: the base at @base, of content ID ID, was verified by
 * whoever started this QEMU; its first use skips the re-hash (and only if
 * the index it opens has that ID).
 */
static bool trust_verified_base(QemuOpts *opts, const char *base,
                                Error **errp)
{
    const char *id = qemu_opt_get(opts, "verified-id");
    size_t i;

    if (!id) {
        return true;
    }
    for (i = 0; id[i]; i++) {
        if (!g_ascii_isxdigit(id[i]) || g_ascii_isupper(id[i])) {
            break;
        }
    }
    if (i != 32 || id[i]) {
        error_setg(errp, "-handoff verified-id=%s: not a base content ID "
                   "(32 lowercase hex digits)", id);
        return false;
    }
    handoff_base_trust_verified(base, id);
    return true;
}

/* The handoff-* migration parameters the options set. */
static bool set_parameters(QemuOpts *opts, const char *base, Error **errp)
{
    MigrateSetParameters p = { 0 };
    uint64_t workers;
    Error *err = NULL;

    p.has_handoff_base = true;
    p.handoff_base = (char *)base;
    if (qemu_opt_get(opts, "compression")) {
        p.has_handoff_compression = true;
        p.handoff_compression = (char *)qemu_opt_get(opts, "compression");
    }
    if (qemu_opt_get(opts, "delta")) {
        p.has_handoff_delta = true;
        p.handoff_delta = qemu_opt_get_bool(opts, "delta", true);
    }
    if (qemu_opt_get(opts, "workers")) {
        workers = qemu_opt_get_number(opts, "workers", 0);
        if (workers > HANDOFF_MAX_THREADS) {
            error_setg(errp, "-handoff workers=%" PRIu64 ": at most %d",
                       workers, HANDOFF_MAX_THREADS);
            return false;
        }
        p.has_handoff_workers = true;
        p.handoff_workers = workers;
    }
    if (qemu_opt_get(opts, "random-order")) {
        p.has_handoff_random_order = true;
        p.handoff_random_order = qemu_opt_get_bool(opts, "random-order",
                                                   true);
    }
    if (qemu_opt_get(opts, "shared-disks")) {
        p.has_handoff_shared_disks = true;
        p.handoff_shared_disks = (char *)qemu_opt_get(opts, "shared-disks");
    }
    qmp_migrate_set_parameters(&p, &err);
    if (err) {
        error_propagate_prepend(errp, err, "-handoff: ");
        return false;
    }
    return true;
}

void handoff_cli_apply(bool incoming, Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_handoff_opts, NULL);
    const char *base;
    Error *err = NULL;

    if (!opts) {
        return;
    }
    base = qemu_opt_get(opts, "base");
    if (!base || !*base) {
        error_setg(errp, "-handoff needs base=DIR");
        return;
    }
    if (!set_parameters(opts, base, errp) ||
        !trust_verified_base(opts, base, errp)) {
        return;
    }

    /*
     * resume=on says how the VM was born. With -incoming its state comes
     * from the source instead: a domain definition (libvirt's) carries the
     * same command line to every host the VM moves to, so it is no error.
     */
    if (qemu_opt_get_bool(opts, "resume", false) && !incoming) {
        handoff_base_resume(base, errp);
        return;
    }
    if (!handoff_enable_capability(&err)) {
        error_propagate_prepend(errp, err, "-handoff: ");
        return;
    }
    /*
     * A destination opens (and on first use re-hashes) its base now, not
     * when the stream arrives: a bad base stops it here, and the check's
     * cost is not paid while the source's data waits.
     */
    if (incoming) {
        handoff_base_store_free(handoff_base_store_open(base, errp));
    }
}
