/*
 * qemu_migration_handoff.h: what libvirt checks before a handoff
 * (VIR_MIGRATE_HANDOFF, qemu-handoff's migration of a VM as the changes to
 * a base VM both hosts hold)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#include "internal.h"
#include "qemu_migration_params.h"

int
qemuMigrationHandoffCheckFlags(unsigned int flags);

/* The handoff parameters' syntax: no file is looked at. */
int
qemuMigrationHandoffCheckParams(virTypedParameterPtr params,
                                int nparams,
                                unsigned int flags,
                                qemuMigrationParty party);

/* The base on this host: only after the domain's access check. */
int
qemuMigrationHandoffCheckBase(virTypedParameterPtr params,
                              int nparams,
                              unsigned int flags,
                              qemuMigrationParty party);
