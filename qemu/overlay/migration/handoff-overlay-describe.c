/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The description of a VM overlay: what a cloudlet must know to launch
 * the VM without being told, made from this VM when it is saved, and
 * checked against the VM that loads it.
 *
 * Only what decides whether the saved state fits is checked here (base,
 * machine type, RAM, CPUs). Devices are checked where they always are:
 * each section of device state must find its device, or the load fails.
 */
#include "qemu/osdep.h"
#include "hw/boards.h"
#include "qapi/error.h"
#include "qapi/qmp/qlist.h"
#include "qapi/qmp/qnum.h"
#include "sysemu/sysemu.h"
#include "handoff-overlay.h"

static QList *describe_disks(HandoffDisks *disks)
{
    QList *list = qlist_new();
    size_t i;

    for (i = 0; i < disks->n; i++) {
        QDict *d = qdict_new();

        qdict_put_str(d, "region", disks->disk[i].region_name);
        qdict_put_str(d, "drive", blk_name(disks->disk[i].blk));
        qdict_put_int(d, "bytes", disks->disk[i].size);
        qdict_put_bool(d, "base", disks->disk[i].is_base);
        qlist_append(list, d);
    }
    return list;
}

static QDict *describe_creation(void)
{
    QDict *created = qdict_new();
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autofree char *time = g_date_time_format(now, "%Y-%m-%dT%H:%M:%SZ");
    g_autofree char *tool = g_strdup_printf("qemu-handoff %s (QEMU %s)",
                                            handoff_version_string(),
                                            QEMU_VERSION);

    qdict_put_str(created, "tool", tool);
    qdict_put_str(created, "time", time);
    qdict_put_str(created, "vm", qemu_name ?: "");
    qdict_put_str(created, "host", g_get_host_name());
    return created;
}

QDict *handoff_overlay_describe(HandoffBaseStore *store, HandoffDisks *disks,
                                const char *compression)
{
    QDict *description = qdict_new();
    QDict *base = qdict_new();

    qdict_put_str(base, "id", store->id);
    qdict_put_str(base, "machine", store->machine);
    qdict_put(description, "base", base);
    qdict_put_int(description, "version", HANDOFF_OVERLAY_DESCRIPTION_VERSION);
    handoff_overlay_describe_machine(description, disks);
    qdict_put(description, "disks", describe_disks(disks));
    qdict_put_str(description, "compression", compression);
    qdict_put(description, "created", describe_creation());
    return description;
}

/* Field @group.@key of @description, a string equal to @here. */
static bool check_str(QDict *description, const char *group, const char *key,
                      const char *here, Error **errp)
{
    QDict *d = qdict_get_qdict(description, group);
    const char *value = d ? qdict_get_try_str(d, key) : NULL;

    if (!value) {
        error_setg(errp, "overlay description lacks %s.%s", group, key);
        return false;
    }
    if (strcmp(value, here)) {
        error_setg(errp, "overlay made for %s.%s '%s', this VM has '%s'",
                   group, key, value, here);
        return false;
    }
    return true;
}

static bool check_uint(QDict *description, const char *group,
                       const char *key, uint64_t here, Error **errp)
{
    QDict *d = qdict_get_qdict(description, group);
    QNum *num = d ? qobject_to(QNum, qdict_get(d, key)) : NULL;
    uint64_t value;

    if (!num || !qnum_get_try_uint(num, &value)) {
        error_setg(errp, "overlay description lacks %s.%s", group, key);
        return false;
    }
    if (value != here) {
        error_setg(errp, "overlay made for %s.%s %" PRIu64 ", this VM has "
                   "%" PRIu64, group, key, value, here);
        return false;
    }
    return true;
}

bool handoff_overlay_check(QDict *description, HandoffBaseStore *store,
                           Error **errp)
{
    MachineState *ms = current_machine;

    return check_str(description, "base", "id", store->id, errp) &&
           check_str(description, "machine", "type",
                     MACHINE_GET_CLASS(ms)->name, errp) &&
           check_uint(description, "machine", "ram-bytes", ms->ram_size,
                      errp) &&
           check_uint(description, "machine", "cpus", ms->smp.cpus, errp) &&
           check_uint(description, "machine", "max-cpus", ms->smp.max_cpus,
                      errp) &&
           check_str(description, "machine", "cpu-type",
                     ms->cpu_type ?: "", errp);
}
