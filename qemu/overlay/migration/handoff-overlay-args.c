/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The command-line fragment of a VM overlay: the options that shape the
 * machine and its devices, taken from this process's own arguments.
 *
 * A cloudlet has to create the same devices at the same places before the
 * VM's state can load into them, and QOM cannot be turned back into a
 * command line in general; the arguments the VM was started with can.
 * What belongs to this host is left out: monitors, logs, pid files,
 * -incoming and -handoff, TLS objects, anything naming a host path other
 * than the kernel, initrd and firmware. Disks the overlay carries become
 * "@disk:REGION" and serial backends "@serial": the cloudlet makes its
 * own images and consoles.
 */
#include "qemu/osdep.h"
#include "block/block_int.h"
#include "qapi/qmp/qlist.h"
#include "handoff-overlay.h"

#define HAS_ARG 0x0001

typedef struct QemuOptionArity {
    const char *name;
    int flags;
} QemuOptionArity;

/* Which options take an argument, from the table vl.c parses with. */
static const QemuOptionArity qemu_option_arity[] = {
    { "h", 0 },
#define DEF(option, opt_arg, opt_enum, opt_help, arch_mask) \
    { option, opt_arg },
#define DEFHEADING(text)
#define ARCHHEADING(text, arch_mask)
#include "qemu-options.def"
    { NULL, 0 }
};

/* Options kept as they are: the machine, its devices and firmware. */
static const char *const kept_with_arg[] = {
    "machine", "M", "m", "smp", "cpu", "device", "global", "kernel",
    "initrd", "append", "netdev", "nic", "net", "vga", "rtc", "boot",
    "bios", "L", NULL
};
static const char *const kept_flags[] = {
    "nodefaults", "no-reboot", "no-shutdown", "no-hpet", "no-acpi", NULL
};
/* -object types that are part of the machine, not of the host. */
static const char *const kept_objects[] = {
    "iothread", "memory-backend-ram", "rng-builtin", NULL
};

static bool option_takes_arg(const char *name)
{
    const QemuOptionArity *o;

    for (o = qemu_option_arity; o->name; o++) {
        if (!strcmp(o->name, name)) {
            return o->flags & HAS_ARG;
        }
    }
    return false;
}

static bool in_list(const char *const *list, const char *name)
{
    for (; *list; list++) {
        if (!strcmp(*list, name)) {
            return true;
        }
    }
    return false;
}

/* The value of key @key in QEMU option text @text (",," unescaped). */
static char *option_value(const char *text, const char *key)
{
    size_t klen = strlen(key);
    const char *p = text;

    while (*p) {
        const char *start = p;
        GString *value = g_string_new(NULL);

        for (; *p && !(p[0] == ',' && p[1] != ','); p++) {
            if (p[0] == ',' && p[1] == ',') {
                p++;
            }
            g_string_append_c(value, *p);
        }
        if (!strncmp(start, key, klen) && start[klen] == '=') {
            g_string_erase(value, 0, klen + 1);
            return g_string_free(value, false);
        }
        g_string_free(value, true);
        if (*p == ',') {
            p++;
        }
    }
    return NULL;
}

/* @text with the value of @key replaced by @value (which has no comma). */
static char *option_replace(const char *text, const char *key,
                            const char *value)
{
    GString *out = g_string_new(NULL);
    size_t klen = strlen(key);
    const char *p = text;

    while (*p) {
        const char *start = p;

        for (; *p && !(p[0] == ',' && p[1] != ','); p++) {
            if (p[0] == ',' && p[1] == ',') {
                p++;
            }
        }
        if (out->len) {
            g_string_append_c(out, ',');
        }
        if (!strncmp(start, key, klen) && start[klen] == '=') {
            g_string_append_printf(out, "%s=%s", key, value);
        } else {
            g_string_append_len(out, start, p - start);
        }
        if (*p == ',') {
            p++;
        }
    }
    return g_string_free(out, false);
}

/* The region of the handed-off disk whose image is @file, or NULL. */
static const char *disk_region_of(HandoffDisks *disks, const char *file)
{
    g_autofree char *real = realpath(file, NULL);
    size_t i;

    for (i = 0; real && i < disks->n; i++) {
        BlockDriverState *bs = blk_bs(disks->disk[i].blk);
        g_autofree char *image = bs ? realpath(bs->filename, NULL) : NULL;

        if (image && !strcmp(image, real)) {
            return disks->disk[i].region_name;
        }
    }
    return NULL;
}

/* -drive: a carried disk's image becomes @disk:REGION; others stay. */
static char *drive_arg(HandoffDisks *disks, const char *text)
{
    g_autofree char *file = option_value(text, "file");
    const char *region = file ? disk_region_of(disks, file) : NULL;
    g_autofree char *placeholder = NULL;

    if (!region) {
        return g_strdup(text);
    }
    placeholder = g_strdup_printf("@disk:%s", region);
    return option_replace(text, "file", placeholder);
}

static bool object_kept(const char *text)
{
    g_autofree char *type = option_value(text, "qom-type");
    size_t i;

    if (!type) {
        /* The implied first key: "iothread,id=io0". */
        type = g_strndup(text, strcspn(text, ","));
    }
    for (i = 0; kept_objects[i]; i++) {
        if (!strcmp(type, kept_objects[i])) {
            return true;
        }
    }
    return false;
}

/* Appends option @name with @arg (NULL: a flag) to @out, or skips it. */
static void add_option(QList *out, HandoffDisks *disks, const char *name,
                       const char *arg)
{
    g_autofree char *opt = g_strdup_printf("-%s", name);

    if (!arg) {
        if (in_list(kept_flags, name)) {
            qlist_append_str(out, opt);
        }
        return;
    }
    if (in_list(kept_with_arg, name)) {
        qlist_append_str(out, opt);
        qlist_append_str(out, arg);
    } else if (!strcmp(name, "drive")) {
        g_autofree char *drive = drive_arg(disks, arg);

        qlist_append_str(out, opt);
        qlist_append_str(out, drive);
    } else if (!strcmp(name, "serial")) {
        qlist_append_str(out, opt);
        qlist_append_str(out, "@serial");
    } else if (!strcmp(name, "object") && object_kept(arg)) {
        qlist_append_str(out, opt);
        qlist_append_str(out, arg);
    }
}

QList *handoff_overlay_args(HandoffDisks *disks)
{
    QList *out = qlist_new();
    g_autofree char *cmdline = NULL;
    gsize len = 0;
    size_t pos;

    /* Linux: exactly the argv this QEMU was given, NUL-separated. */
    if (!g_file_get_contents("/proc/self/cmdline", &cmdline, &len, NULL)) {
        return out;
    }
    pos = strlen(cmdline) + 1;              /* the program itself */
    while (pos < len) {
        const char *word = cmdline + pos;
        const char *name = word + (word[0] == '-');
        const char *arg = NULL;

        pos += strlen(word) + 1;
        if (word[0] != '-') {
            continue;                       /* an image given bare */
        }
        name += (name[0] == '-');           /* --opt is -opt */
        if (option_takes_arg(name) && pos < len) {
            arg = cmdline + pos;
            pos += strlen(arg) + 1;
        }
        add_option(out, disks, name, arg);
    }
    return out;
}
