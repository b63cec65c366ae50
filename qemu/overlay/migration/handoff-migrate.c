/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The migrate-handoff command (QMP and HMP): the migration parameters it
 * is given, capability handoff with the return path it needs, then plain
 * migrate. Nothing here that `migrate` with those settings would not do.
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
#include "handoff-internal.h"

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
