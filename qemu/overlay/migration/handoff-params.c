/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Handoff's capability and migration parameters.
 *
 * Handoff is configured the way the rest of migration is (capability +
 * migration parameters), so that plain `migrate` works with it and libvirt
 * drives it like any other migration; migrate-handoff (handoff-migrate.c)
 * and -handoff (handoff-cli.c) are shorthands on top of exactly those
 * settings.
 */
#include "qemu/osdep.h"
#include "migration/handoff.h"
#include "migration.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-migration.h"
#include "qapi/visitor.h"
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

/* handoff and the return path it needs, in one go. */
bool handoff_enable_capability(Error **errp)
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
