/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The device layout a base was saved with, checked before a VM resumes
 * from it.
 *
 * Device state is matched to devices by the path savevm names them with
 * (a PCI device by its address, "0000:00:02.0"), not by what they are.
 * A VM started from a base with one more PCI device on its command line
 * gets its devices at other addresses: with the data disk's virtio-blk
 * first, the base's root-disk state was loaded into the data disk's
 * device, and the guest's root filesystem writes went to the data disk.
 * Nothing failed. So the base records, for every device that has such a
 * path, its path and type, and which one holds the base disk; a VM that
 * lacks one of them at the same path, or whose base-disk overlay hangs
 * off another device, is refused, naming it. Devices the base did not
 * have are fine at free addresses (the guest has not probed them: hotplug
 * them with device_add, or give them an addr= beyond the base's).
 */
#include "qemu/osdep.h"
#include "hw/qdev-core.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qlist.h"
#include "qapi/qmp/qstring.h"
#include "qom/object.h"
#include "sysemu/block-backend.h"
#include "handoff-internal.h"

/* "PATH TYPE" of @dev, or NULL when savevm gives it no path. */
static char *device_entry(DeviceState *dev)
{
    g_autofree char *path = qdev_get_dev_path(dev);

    if (!path || !*path) {
        return NULL;
    }
    return g_strdup_printf("%s %s", path, object_get_typename(OBJECT(dev)));
}

static int add_device(Object *obj, void *opaque)
{
    GPtrArray *entries = opaque;
    DeviceState *dev = (DeviceState *)object_dynamic_cast(obj, TYPE_DEVICE);
    char *entry;

    if (dev && dev->realized && (entry = device_entry(dev))) {
        g_ptr_array_add(entries, entry);
    }
    return 0;
}

static gint entry_order(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* This VM's devices, sorted: stable for the same command line. */
static GPtrArray *this_layout(void)
{
    GPtrArray *entries = g_ptr_array_new_with_free_func(g_free);

    object_child_foreach_recursive(object_get_root(), add_device, entries);
    g_ptr_array_sort(entries, entry_order);
    return entries;
}

static char *disk_device_entry(BlockBackend *disk)
{
    DeviceState *dev = blk_get_attached_dev(disk);

    return dev ? device_entry(dev) : NULL;
}

QDict *handoff_layout_save(BlockBackend *disk)
{
    g_autoptr(GPtrArray) entries = this_layout();
    g_autofree char *disk_entry = disk_device_entry(disk);
    QDict *layout = qdict_new();
    QList *devices = qlist_new();
    guint i;

    for (i = 0; i < entries->len; i++) {
        qlist_append_str(devices, g_ptr_array_index(entries, i));
    }
    qdict_put(layout, "devices", devices);
    qdict_put_str(layout, "disk-device", disk_entry ?: "");
    return layout;
}

static bool has_entry(GPtrArray *entries, const char *entry)
{
    guint i;

    for (i = 0; i < entries->len; i++) {
        if (!strcmp(g_ptr_array_index(entries, i), entry)) {
            return true;
        }
    }
    return false;
}

bool handoff_layout_check(QDict *layout, BlockBackend *disk, Error **errp)
{
    QList *devices = layout ? qdict_get_qlist(layout, "devices") : NULL;
    const char *want_disk = layout ? qdict_get_try_str(layout, "disk-device")
                                   : NULL;
    g_autoptr(GPtrArray) entries = this_layout();
    g_autofree char *have_disk = disk_device_entry(disk);
    QListEntry *e;

    if (!devices || !want_disk) {
        error_setg(errp, "the base records no device layout: re-create it "
                   "with this version (a VM whose devices moved would load "
                   "their state into other devices)");
        return false;
    }
    QLIST_FOREACH_ENTRY(devices, e) {
        QString *qs = qobject_to(QString, e->value);
        const char *entry = qs ? qstring_get_str(qs) : NULL;

        if (!entry) {
            error_setg(errp, "the base's device layout is not a list of "
                       "strings");
            return false;
        }
        if (!has_entry(entries, entry)) {
            error_setg(errp, "the base was saved with device '%s', which "
                       "this VM does not have at that address: its state "
                       "would go to another device", entry);
            error_append_hint(errp, "Give the VM the base's devices at the "
                              "same addresses; add new ones at free "
                              "addresses (addr=) or with device_add\n");
            return false;
        }
    }
    if (g_strcmp0(want_disk, have_disk ?: "")) {
        error_setg(errp, "the base had its disk on device '%s', this VM's "
                   "overlay on it is on '%s'", want_disk,
                   have_disk ?: "no device");
        return false;
    }
    return true;
}
