/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The machine of a VM overlay, described as data (description version 2):
 * its boot files by name, its serial ports, and every device the user
 * created with the properties that differ from the device's defaults.
 *
 * A cloudlet has to create the same devices at the same places before the
 * VM's state can load into them. It used to be handed this VM's own
 * command-line fragment, which put text from a stranger into QEMU's option
 * parser. Now it builds the command line itself from this description,
 * through an allowlist of models and properties of its own
 * (python/qemu_handoff/synthesis/machine_args.py): here nothing is
 * filtered, the cloudlet decides what it runs.
 *
 * What is written is read from QOM, not from the arguments: a device is
 * described as it is, whatever option made it. Links to host resources
 * are described by kind only (a drive by the region the overlay carries
 * it as, a netdev by its type, a chardev or a linked object by its QOM
 * type), never by host name or path.
 */
#include "qemu/osdep.h"
#include "block/block_int.h"
#include "chardev/char.h"
#include "hw/boards.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "hw/qdev-properties-system.h"
#include "hw/virtio/virtio-bus.h"
#include "net/net.h"
#include "qemu/accel.h"
#include "qapi/error.h"
#include "qapi/qapi-types-net.h"
#include "qapi/qmp/qlist.h"
#include "qapi/qmp/qnull.h"
#include "qapi/qmp/qstring.h"
#include "qemu/cutils.h"
#include "qom/object.h"
#include "qom/qom-qobject.h"
#include "sysemu/block-backend.h"
#include "sysemu/sysemu.h"
#include "handoff-overlay.h"

typedef struct MachineWalk {
    HandoffDisks *disks;
    GPtrArray *devices;         /* DeviceState *, in creation-safe order */
} MachineWalk;

/* A virtio backend stands for its proxy: the proxy is what -device made. */
static DeviceState *device_as_created(DeviceState *dev)
{
    BusState *bus = qdev_get_parent_bus(dev);

    if (bus && object_dynamic_cast(OBJECT(bus), TYPE_VIRTIO_BUS) &&
        bus->parent) {
        return bus->parent;
    }
    return dev;
}

static void add_device(MachineWalk *w, DeviceState *dev)
{
    dev = device_as_created(dev);
    if (!g_ptr_array_find(w->devices, dev, NULL)) {
        g_ptr_array_add(w->devices, dev);
    }
}

static int add_peripheral(Object *child, void *opaque)
{
    DeviceState *dev = (DeviceState *)object_dynamic_cast(child, TYPE_DEVICE);

    if (dev) {
        add_device(opaque, dev);
    }
    return 0;
}

/* How many buses lie between @dev and the machine: a device comes after
 * the device whose bus it sits on. */
static int device_depth(DeviceState *dev)
{
    int depth = 0;
    BusState *bus;

    while ((bus = qdev_get_parent_bus(dev)) && bus->parent) {
        dev = bus->parent;
        depth++;
    }
    return depth;
}

static gint by_depth_then_id(gconstpointer a, gconstpointer b)
{
    DeviceState *da = *(DeviceState *const *)a;
    DeviceState *db = *(DeviceState *const *)b;
    int d = device_depth(da) - device_depth(db);

    return d ? d : g_strcmp0(object_get_canonical_path(OBJECT(da)),
                             object_get_canonical_path(OBJECT(db)));
}

/* The region a drive of this VM is carried as, or NULL. */
static const char *drive_region(HandoffDisks *disks, const char *drive)
{
    size_t i;

    for (i = 0; i < disks->n; i++) {
        if (!strcmp(blk_name(disks->disk[i].blk), drive)) {
            return disks->disk[i].region_name;
        }
    }
    return NULL;
}

/* A link to something of the host, described by its kind only. */
static QObject *describe_link(MachineWalk *w, Object *obj, const Property *prop)
{
    g_autofree char *value = NULL;

    if (prop->info == &qdev_prop_link) {
        Object *target = object_property_get_link(obj, prop->name, NULL);

        return target ? QOBJECT(qstring_from_str(object_get_typename(target)))
                      : NULL;
    }
    value = object_property_get_str(obj, prop->name, NULL);
    if (!value || !*value) {
        return NULL;
    }
    if (prop->info == &qdev_prop_drive) {
        const char *region = drive_region(w->disks, value);

        /* null: a drive the overlay does not carry (a cloudlet refuses) */
        return region ? QOBJECT(qstring_from_str(region)) : QOBJECT(qnull());
    }
    if (prop->info == &qdev_prop_netdev) {
        NetClientState *nc = qemu_find_netdev(value);

        return QOBJECT(qstring_from_str(
            nc ? NetClientDriver_str(nc->info->type) : "unknown"));
    }
    /* qdev_prop_chr */
    return QOBJECT(qstring_from_str(qemu_chr_find(value) ?
        object_get_typename(OBJECT(qemu_chr_find(value))) : "unknown"));
}

static bool is_link(const Property *prop)
{
    return prop->info == &qdev_prop_link || prop->info == &qdev_prop_drive ||
           prop->info == &qdev_prop_netdev || prop->info == &qdev_prop_chr;
}

/* @prop of @obj if it differs from its default (links: if set). */
static QObject *describe_property(MachineWalk *w, Object *obj,
                                  const Property *prop)
{
    ObjectProperty *op = object_property_find(obj, prop->name);
    QObject *value;

    if (!op || !op->get) {
        return NULL;
    }
    if (is_link(prop)) {
        return describe_link(w, obj, prop);
    }
    value = object_property_get_qobject(obj, prop->name, NULL);
    if (!value) {
        return QOBJECT(qnull());        /* unreadable: a cloudlet refuses */
    }
    if (op->defval ? qobject_is_equal(value, op->defval)
                   : qobject_type(value) == QTYPE_QSTRING &&
                     !*qstring_get_str(qobject_to(QString, value))) {
        qobject_unref(value);
        return NULL;
    }
    return value;
}

/* The static properties of @obj's classes, from the most derived. */
static void describe_properties(MachineWalk *w, Object *obj, QDict *props)
{
    ObjectClass *oc;

    for (oc = object_get_class(obj); oc; oc = object_class_get_parent(oc)) {
        DeviceClass *dc = (DeviceClass *)
            object_class_dynamic_cast(oc, TYPE_DEVICE);
        Property *prop;

        for (prop = dc ? dc->props_ : NULL; prop && prop->name; prop++) {
            QObject *value;

            if (qdict_haskey(props, prop->name)) {
                continue;
            }
            value = describe_property(w, obj, prop);
            if (value) {
                qdict_put_obj(props, prop->name, value);
            }
        }
    }
}

/* Where @dev sits: on another described device's bus ({device, bus}), or
 * on one of the board's (its name); nothing for the default place. */
static void describe_bus(MachineWalk *w, DeviceState *dev, QDict *d)
{
    BusState *bus = qdev_get_parent_bus(dev);
    DeviceState *owner = bus && bus->parent ?
                         device_as_created(bus->parent) : NULL;
    guint index;

    if (owner && g_ptr_array_find(w->devices, owner, &index)) {
        qdict_put_int(d, "on-device", index);
        return;
    }
    if (bus && bus->parent) {
        qdict_put_str(d, "bus", bus->name);
    }
}

static QDict *describe_device(MachineWalk *w, DeviceState *dev)
{
    QDict *d = qdict_new();
    QDict *props = qdict_new();
    Object *backend = object_resolve_path_component(OBJECT(dev),
                                                    "virtio-backend");

    qdict_put_str(d, "model", object_get_typename(OBJECT(dev)));
    describe_bus(w, dev, d);
    describe_properties(w, OBJECT(dev), props);
    if (backend) {
        /* The proxy aliases its backend's properties: one set. */
        describe_properties(w, backend, props);
    }
    qdict_put(d, "properties", props);
    return d;
}

static QList *describe_devices(HandoffDisks *disks)
{
    MachineWalk w = { .disks = disks, .devices = g_ptr_array_new() };
    QList *list = qlist_new();
    size_t i;

    object_child_foreach(container_get(qdev_get_machine(), "/peripheral"),
                         add_peripheral, &w);
    object_child_foreach(container_get(qdev_get_machine(),
                                       "/peripheral-anon"),
                         add_peripheral, &w);
    /* Disks a board made from -drive (IDE): described like the others. */
    for (i = 0; i < disks->n; i++) {
        DeviceState *dev = blk_get_attached_dev(disks->disk[i].blk);

        if (dev) {
            add_device(&w, dev);
        }
    }
    g_ptr_array_sort(w.devices, by_depth_then_id);
    for (i = 0; i < w.devices->len; i++) {
        qlist_append(list, describe_device(&w, w.devices->pdata[i]));
    }
    g_ptr_array_free(w.devices, true);
    return list;
}

static void put_basename(QDict *d, const char *key, const char *path)
{
    if (path && *path) {
        g_autofree char *name = g_path_get_basename(path);

        qdict_put_str(d, key, name);
    }
}

/* Kernel, initrd and firmware by file name: a cloudlet takes files of
 * these names from the base, never a path from the overlay. */
static QDict *describe_boot(void)
{
    MachineState *ms = current_machine;
    QDict *boot = qdict_new();

    put_basename(boot, "kernel", ms->kernel_filename);
    put_basename(boot, "initrd", ms->initrd_filename);
    put_basename(boot, "firmware", ms->firmware);
    if (ms->kernel_filename && ms->kernel_cmdline) {
        qdict_put_str(boot, "append", ms->kernel_cmdline);
    }
    return boot;
}

static int serial_ports(void)
{
    int n = 0;

    while (serial_hd(n)) {
        n++;
    }
    return n;
}

static QDict *describe_machine_group(void)
{
    MachineState *ms = current_machine;
    QDict *machine = qdict_new();
    QDict *topology = qdict_new();

    qdict_put_str(machine, "type", MACHINE_GET_CLASS(ms)->name);
    qdict_put_int(machine, "ram-bytes", ms->ram_size);
    qdict_put_int(machine, "max-ram-bytes", ms->maxram_size);
    qdict_put_int(machine, "cpus", ms->smp.cpus);
    qdict_put_int(machine, "max-cpus", ms->smp.max_cpus);
    qdict_put_int(topology, "sockets", ms->smp.sockets);
    qdict_put_int(topology, "dies", ms->smp.dies);
    qdict_put_int(topology, "cores", ms->smp.cores);
    qdict_put_int(topology, "threads", ms->smp.threads);
    qdict_put(machine, "topology", topology);
    qdict_put_str(machine, "cpu-type", ms->cpu_type ?: "");
    qdict_put_str(machine, "accel", current_accel_name());
    return machine;
}

void handoff_overlay_describe_machine(QDict *description, HandoffDisks *disks)
{
    qdict_put(description, "machine", describe_machine_group());
    qdict_put(description, "boot", describe_boot());
    qdict_put_int(description, "serial-ports", serial_ports());
    qdict_put(description, "devices", describe_devices(disks));
}
