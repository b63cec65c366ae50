/*
 * qemu_migration_handoff.c: what libvirt checks before a handoff
 *
 * A handoff sends what the base VM lacks: RAM and every writable disk, in
 * QEMU's own stream (capability "handoff", parameters "handoff-base" and
 * "handoff-compression"). libvirt's part is to refuse, before anything
 * moves, what cannot work: a missing base on either host, and the options
 * whose streams handoff replaces. QEMU checks the base's content and the
 * destination's overlays itself and reports over the return path.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include <config.h>

#include "qemu_migration_handoff.h"
#include "virerror.h"
#include "virfile.h"
#include "virtypedparam.h"

#define VIR_FROM_THIS VIR_FROM_QEMU

/* The file that makes a directory a base (qemu-handoff's base layout). */
#define HANDOFF_BASE_MANIFEST "base.json"

static const struct {
    unsigned int flag;
    const char *option;
} qemuMigrationHandoffExcluded[] = {
    /* Handoff carries the disks itself; NBD would copy them twice. */
    { VIR_MIGRATE_NON_SHARED_DISK, "--copy-storage-all" },
    { VIR_MIGRATE_NON_SHARED_INC, "--copy-storage-inc" },
    /* The destination's verdict needs the return path tunnelling lacks. */
    { VIR_MIGRATE_TUNNELLED, "--tunnelled" },
    /* These shape the RAM stream that handoff replaces. */
    { VIR_MIGRATE_POSTCOPY, "--postcopy" },
    { VIR_MIGRATE_PARALLEL, "--parallel" },
    { VIR_MIGRATE_COMPRESSED, "--compressed" },
    { VIR_MIGRATE_OFFLINE, "--offline" },
};


int
qemuMigrationHandoffCheckFlags(unsigned int flags)
{
    size_t i;

    if (!(flags & VIR_MIGRATE_HANDOFF))
        return 0;

    for (i = 0; i < G_N_ELEMENTS(qemuMigrationHandoffExcluded); i++) {
        if (flags & qemuMigrationHandoffExcluded[i].flag) {
            virReportError(VIR_ERR_ARGUMENT_UNSUPPORTED,
                           _("handoff cannot be combined with %s: handoff "
                             "carries RAM and disks in its own stream"),
                           qemuMigrationHandoffExcluded[i].option);
            return -1;
        }
    }
    return 0;
}


int
qemuMigrationHandoffCheckParams(virTypedParameterPtr params,
                                int nparams,
                                unsigned int flags,
                                qemuMigrationParty party G_GNUC_UNUSED)
{
    const char *base = NULL;
    const char *compression = NULL;

    if (virTypedParamsGetString(params, nparams,
                                VIR_MIGRATE_PARAM_HANDOFF_BASE, &base) < 0 ||
        virTypedParamsGetString(params, nparams,
                                VIR_MIGRATE_PARAM_HANDOFF_COMPRESSION,
                                &compression) < 0)
        return -1;

    if (!(flags & VIR_MIGRATE_HANDOFF)) {
        if (base || compression) {
            virReportError(VIR_ERR_INVALID_ARG, "%s",
                           _("handoff parameters given without the handoff "
                             "flag (virsh: --handoff)"));
            return -1;
        }
        return 0;
    }

    if (!base || !*base) {
        virReportError(VIR_ERR_INVALID_ARG, "%s",
                       _("handoff needs the base VM it is made against "
                         "(virsh: --handoff-base DIR)"));
        return -1;
    }
    if (!g_path_is_absolute(base)) {
        virReportError(VIR_ERR_INVALID_ARG,
                       _("handoff base '%s' must be an absolute path"), base);
        return -1;
    }
    return 0;
}


/*
 * Whether the base exists on this host, so that a host without it refuses
 * before either QEMU is told anything (QEMU verifies the base's content
 * itself). Called only once the caller passed the domain's access check:
 * the answer tells whether a path exists on the host, which a client
 * without the right to migrate the domain must not learn.
 */
int
qemuMigrationHandoffCheckBase(virTypedParameterPtr params,
                              int nparams,
                              unsigned int flags,
                              qemuMigrationParty party)
{
    const char *host = party == QEMU_MIGRATION_SOURCE ? "source" : "destination";
    const char *base = NULL;
    g_autofree char *manifest = NULL;

    if (!(flags & VIR_MIGRATE_HANDOFF))
        return 0;
    if (virTypedParamsGetString(params, nparams,
                                VIR_MIGRATE_PARAM_HANDOFF_BASE, &base) < 0 ||
        qemuMigrationHandoffCheckParams(params, nparams, flags, party) < 0)
        return -1;

    manifest = g_build_filename(base, HANDOFF_BASE_MANIFEST, NULL);
    if (!virFileIsRegular(manifest)) {
        virReportError(VIR_ERR_OPERATION_INVALID,
                       _("handoff base '%s' not found on the %s host: "
                         "%s is missing"), base, host, manifest);
        return -1;
    }
    return 0;
}
