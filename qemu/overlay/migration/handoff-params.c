/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Handoff's capability, migration parameters, command-line option and the
 * migrate-handoff command.
 *
 * Handoff is configured the way the rest of migration is (capability +
 * migration parameters), so that plain `migrate` works with it and libvirt
 * drives it like any other migration; migrate-handoff and -handoff are
 * shorthands on top of exactly those settings.
 */
#include "qemu/osdep.h"
#include "migration/handoff.h"
#include "migration.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qapi/qapi-commands-migration.h"
#include "qapi/qmp/qdict.h"
#include "qapi/visitor.h"
#include "qemu/cutils.h"
#include "qemu/option.h"
#include "qemu/config-file.h"
#include "qemu/lockable.h"
#include "qemu-file.h"
#include "handoff-internal.h"

bool migrate_use_handoff(void)
{
    return migrate_get_current()->enabled_capabilities[
        MIGRATION_CAPABILITY_HANDOFF];
}

bool handoff_caps_check(bool *cap_list, Error **errp)
{
    static const MigrationCapability exclusive[] = {
        MIGRATION_CAPABILITY_BLOCK,
        MIGRATION_CAPABILITY_POSTCOPY_RAM,
        MIGRATION_CAPABILITY_MULTIFD,
        MIGRATION_CAPABILITY_COMPRESS,
        MIGRATION_CAPABILITY_XBZRLE,
        MIGRATION_CAPABILITY_BACKGROUND_SNAPSHOT,
        MIGRATION_CAPABILITY_X_COLO,
    };
    size_t i;

    if (!cap_list[MIGRATION_CAPABILITY_HANDOFF]) {
        return true;
    }
    /*
     * Without a return path the source could complete, stop its VM, and
     * never learn that the destination rejected the stream.
     */
    if (!cap_list[MIGRATION_CAPABILITY_RETURN_PATH]) {
        error_setg(errp, "Capability handoff requires capability "
                   "return-path: the destination confirms what it loaded");
        return false;
    }
    /* Handoff replaces the RAM and block streams these would shape. */
    for (i = 0; i < ARRAY_SIZE(exclusive); i++) {
        if (cap_list[exclusive[i]]) {
            error_setg(errp, "Capability handoff cannot be combined with %s",
                       MigrationCapability_str(exclusive[i]));
            return false;
        }
    }
    return true;
}

void handoff_params_init(MigrationParameters *params)
{
    params->has_handoff_base = true;
    params->handoff_base = g_strdup("");
    params->has_handoff_compression = true;
    params->handoff_compression = g_strdup("auto");
    params->has_handoff_delta = true;
    params->handoff_delta = true;
    params->has_handoff_workers = true;
    params->handoff_workers = 0;
    params->has_handoff_random_order = true;
    params->handoff_random_order = true;
    params->has_handoff_shared_disks = true;
    params->handoff_shared_disks = g_strdup("");
}

void handoff_params_query(const MigrationParameters *current,
                          MigrationParameters *out)
{
    out->has_handoff_base = true;
    out->handoff_base = g_strdup(current->handoff_base ?: "");
    out->has_handoff_compression = true;
    out->handoff_compression = g_strdup(current->handoff_compression ?: "auto");
    out->has_handoff_delta = true;
    out->handoff_delta = current->handoff_delta;
    out->has_handoff_workers = true;
    out->handoff_workers = current->handoff_workers;
    out->has_handoff_random_order = true;
    out->handoff_random_order = current->handoff_random_order;
    out->has_handoff_shared_disks = true;
    out->handoff_shared_disks = g_strdup(current->handoff_shared_disks ?: "");
}

bool handoff_params_check(MigrationParameters *params, Error **errp)
{
    HandoffEncoderConfig config;

    /*
     * The name alone: handoff-delta may be set after it, so it is judged
     * with deltas allowed; the two meet when a handoff starts
     * (create_encoder), where the engine may still refuse the pair.
     */
    if (params->has_handoff_compression &&
        !handoff_compression_config(params->handoff_compression, true,
                                    &config, errp)) {
        return false;
    }
    if (params->has_handoff_workers &&
        params->handoff_workers > HANDOFF_MAX_THREADS) {
        error_setg(errp, "Parameter 'handoff-workers' expects a value "
                   "between 0 (one per host CPU) and %d", HANDOFF_MAX_THREADS);
        return false;
    }
    return true;
}

void handoff_params_test_apply(MigrateSetParameters *params,
                               MigrationParameters *dest)
{
    /* dest is a shallow copy used only for checking: borrow the strings. */
    if (params->has_handoff_base) {
        dest->handoff_base = params->handoff_base;
    }
    if (params->has_handoff_compression) {
        dest->handoff_compression = params->handoff_compression;
    }
    if (params->has_handoff_delta) {
        dest->handoff_delta = params->handoff_delta;
    }
    if (params->has_handoff_workers) {
        dest->handoff_workers = params->handoff_workers;
    }
    if (params->has_handoff_random_order) {
        dest->handoff_random_order = params->handoff_random_order;
    }
    if (params->has_handoff_shared_disks) {
        dest->handoff_shared_disks = params->handoff_shared_disks;
    }
}

void handoff_params_apply(MigrateSetParameters *params,
                          MigrationParameters *current)
{
    if (params->has_handoff_base) {
        g_free(current->handoff_base);
        current->handoff_base = g_strdup(params->handoff_base);
    }
    if (params->has_handoff_compression) {
        g_free(current->handoff_compression);
        current->handoff_compression = g_strdup(params->handoff_compression);
    }
    if (params->has_handoff_delta) {
        current->handoff_delta = params->handoff_delta;
    }
    if (params->has_handoff_workers) {
        current->handoff_workers = params->handoff_workers;
    }
    if (params->has_handoff_random_order) {
        current->handoff_random_order = params->handoff_random_order;
    }
    if (params->has_handoff_shared_disks) {
        g_free(current->handoff_shared_disks);
        current->handoff_shared_disks = g_strdup(params->handoff_shared_disks);
    }
}

bool handoff_disk_is_shared(const char *list, const char *drive,
                            const char *device)
{
    g_auto(GStrv) names = g_strsplit_set(list ?: "", ",:", -1);
    size_t i;

    for (i = 0; names[i]; i++) {
        if (*names[i] && (!g_strcmp0(names[i], drive) ||
                          !g_strcmp0(names[i], device))) {
            return true;
        }
    }
    return false;
}

bool handoff_compression_config(const char *text, bool delta,
                                HandoffEncoderConfig *config, Error **errp)
{
    *config = (HandoffEncoderConfig){ .struct_size = sizeof(*config) };
    if (handoff_encoder_config_default(config) < 0 ||
        handoff_encoder_config_set_compression(
            config, text, delta ? HANDOFF_DELTAS_ON : HANDOFF_DELTAS_OFF) < 0) {
        error_setg(errp, "Handoff compression: %s (or auto)",
                   handoff_last_error_message());
        return false;
    }
    return true;
}

/* --- migrate-handoff ----------------------------------------------------- */

/*
 * Return-path thread. The destination's reason is the cause of whatever
 * the outgoing stream runs into next (a reset, a closed socket), so it is
 * recorded first, and the stream is shut down at once: sending on to a
 * destination that has given up only delays the failure.
 */
void handoff_rp_error(MigrationState *s, const char *text, size_t len)
{
    Error *err = NULL;

    error_setg(&err, "Handoff failed on the destination: %.*s", (int)len,
               text);
    migrate_set_error(s, err);
    error_free(err);
    WITH_QEMU_LOCK_GUARD(&s->qemu_file_lock) {
        if (s->to_dst_file) {
            qemu_file_shutdown(s->to_dst_file);
        }
    }
}

void handoff_rp_lost(MigrationState *s, int err)
{
    Error *local = NULL;

    /* A cancel ends the return path too; it is no failure to explain. */
    if (s->state == MIGRATION_STATUS_CANCELLING ||
        s->state == MIGRATION_STATUS_CANCELLED) {
        return;
    }
    /* The first error is kept: a verdict the destination sent wins. */
    error_setg(&local, "Handoff failed: the connection to the destination "
               "ended before it confirmed the handoff (its QEMU exited, or "
               "the link was cut): %s", strerror(-err));
    migrate_set_error(s, local);
    error_free(local);
}

/*
 * A destination that exited, or a cut link, shows on the outgoing stream
 * as EPIPE or ECONNRESET, often before the return-path thread has read
 * what the destination sent last: its verdict, or the end of the
 * connection. That thread records the cause; the stream's own error
 * ("Broken pipe") would only hide it, and which of the two threads gets
 * there first is a race. So wait for the return path to end (a peer that
 * closed has nothing more to send, so this is quick; bounded at 2 s in
 * case it never does), then name the lost destination if nothing has been
 * recorded. Only the migration thread sleeps here, without the BQL.
 */
void handoff_stream_failed(MigrationState *s, int err)
{
    int waited_ms;

    if (err != -EPIPE && err != -ECONNRESET) {
        return;
    }
    for (waited_ms = 0; waited_ms < 2000 && s->rp_state.rp_thread_created &&
         !qatomic_read(&s->rp_state.error); waited_ms += 10) {
        g_usleep(10 * 1000);
    }
    handoff_rp_lost(s, err);
}

/* handoff and the return path it needs, in one go. */
static bool handoff_enable_capability(Error **errp)
{
    MigrationCapabilityStatus rp = {
        .capability = MIGRATION_CAPABILITY_RETURN_PATH,
        .state = true,
    };
    MigrationCapabilityStatus cap = {
        .capability = MIGRATION_CAPABILITY_HANDOFF,
        .state = true,
    };
    MigrationCapabilityStatusList rp_list = { .value = &rp };
    MigrationCapabilityStatusList list = { .value = &cap, .next = &rp_list };
    Error *err = NULL;

    qmp_migrate_set_capabilities(&list, &err);
    if (err) {
        error_propagate(errp, err);
        return false;
    }
    return true;
}

void qmp_migrate_handoff(const char *uri, bool has_base, const char *base,
                         bool has_compression, const char *compression,
                         bool has_delta, bool delta,
                         bool has_workers, uint8_t workers,
                         bool has_random_order, bool random_order,
                         Error **errp)
{
    MigrateSetParameters p = {
        .has_handoff_base = has_base,
        .handoff_base = (char *)base,
        .has_handoff_compression = has_compression,
        .handoff_compression = (char *)compression,
        .has_handoff_delta = has_delta,
        .handoff_delta = delta,
        .has_handoff_workers = has_workers,
        .handoff_workers = workers,
        .has_handoff_random_order = has_random_order,
        .handoff_random_order = random_order,
    };
    Error *err = NULL;

    qmp_migrate_set_parameters(&p, &err);
    if (err) {
        error_propagate(errp, err);
        return;
    }
    if (!handoff_enable_capability(errp)) {
        return;
    }
    qmp_migrate(uri, false, false, false, false, false, false, false, false,
                errp);
}

void hmp_migrate_handoff(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    if (!handoff_enable_capability(&err)) {
        hmp_handle_error(mon, err);
        return;
    }
    /* The rest is plain `migrate`, waiting and progress included. */
    hmp_migrate(mon, qdict);
}

/* --- HMP parameters ------------------------------------------------------ */

void hmp_handoff_set_parameter(Visitor *v, const char *name,
                               MigrationParameter parameter,
                               MigrateSetParameters *p, Error **errp)
{
    switch (parameter) {
    case MIGRATION_PARAMETER_HANDOFF_BASE:
        p->has_handoff_base = true;
        visit_type_str(v, name, &p->handoff_base, errp);
        break;
    case MIGRATION_PARAMETER_HANDOFF_COMPRESSION:
        p->has_handoff_compression = true;
        visit_type_str(v, name, &p->handoff_compression, errp);
        break;
    case MIGRATION_PARAMETER_HANDOFF_DELTA:
        p->has_handoff_delta = true;
        visit_type_bool(v, name, &p->handoff_delta, errp);
        break;
    case MIGRATION_PARAMETER_HANDOFF_WORKERS:
        p->has_handoff_workers = true;
        visit_type_uint8(v, name, &p->handoff_workers, errp);
        break;
    case MIGRATION_PARAMETER_HANDOFF_RANDOM_ORDER:
        p->has_handoff_random_order = true;
        visit_type_bool(v, name, &p->handoff_random_order, errp);
        break;
    case MIGRATION_PARAMETER_HANDOFF_SHARED_DISKS:
        p->has_handoff_shared_disks = true;
        visit_type_str(v, name, &p->handoff_shared_disks, errp);
        break;
    default:
        g_assert_not_reached();
    }
}

void hmp_info_handoff_parameters(Monitor *mon, MigrationParameters *params)
{
    monitor_printf(mon, "%s: '%s'\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_BASE),
        params->handoff_base);
    monitor_printf(mon, "%s: %s\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_COMPRESSION),
        params->handoff_compression);
    monitor_printf(mon, "%s: %s\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_DELTA),
        params->handoff_delta ? "on" : "off");
    monitor_printf(mon, "%s: %u\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_WORKERS),
        params->handoff_workers);
    monitor_printf(mon, "%s: %s\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_RANDOM_ORDER),
        params->handoff_random_order ? "on" : "off");
    monitor_printf(mon, "%s: '%s'\n",
        MigrationParameter_str(MIGRATION_PARAMETER_HANDOFF_SHARED_DISKS),
        params->handoff_shared_disks);
}

/* --- -handoff ------------------------------------------------------------ */

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
        { /* end of list */ }
    },
};

void handoff_cli_parse(const char *optarg, Error **errp)
{
    if (!qemu_opts_parse_noisily(&qemu_handoff_opts, optarg, false)) {
        error_setg(errp, "Invalid -handoff option '%s'", optarg);
    }
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

void handoff_cli_apply(bool incoming, Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_handoff_opts, NULL);
    MigrateSetParameters p = { 0 };
    const char *base;
    uint64_t workers;
    Error *err = NULL;

    if (!opts) {
        return;
    }
    base = qemu_opt_get(opts, "base");
    if (!base || !*base) {
        error_setg(errp, "-handoff needs base=DIR");
        return;
    }
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
            return;
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
