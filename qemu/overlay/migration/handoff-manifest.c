/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A base's manifest (base.json), parsed and bound to the engine's index.
 * Kept apart from the rest of handoff-base.c because it is what a base
 * directory's author controls: it depends on nothing but QObject and the
 * engine, so that qemu/fuzz/fuzz-manifest.c can fuzz it outside a VM.
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "qapi/qmp/qlist.h"
#include "qapi/qmp/qnum.h"
#include "qemu/bitmap.h"
#include "handoff-internal.h"

void handoff_base_store_free(HandoffBaseStore *store)
{
    size_t i;

    if (!store) {
        return;
    }
    handoff_base_free(store->base);
    for (i = 0; i < store->n_memory; i++) {
        g_free(store->memory[i].name);
        g_free(store->memory[i].file);
    }
    g_free(store->memory);
    g_free(store->disk_path);
    g_free(store->disk_file);
    g_free(store->devices_path);
    g_free(store->machine);
    qobject_unref(store->layout);
    g_free(store->dir);
    g_free(store);
}

/*
 * A file of the base directory named by the manifest: relative, no "." or
 * ".." component, so that a manifest cannot point QEMU at a host file
 * outside the base (a resume would load it as guest RAM). Symbolic links
 * are refused where the files are opened (O_NOFOLLOW in handoff-base.c,
 * beneath the directory in the engine).
 */
static char *base_file(HandoffBaseStore *store, const char *rel,
                       Error **errp)
{
    g_auto(GStrv) parts = NULL;
    size_t i;

    if (!*rel || g_path_is_absolute(rel) || strlen(rel) > 255) {
        error_setg(errp, "Base %s: manifest names file '%s': not a "
                   "relative path inside the base", store->dir, rel);
        return NULL;
    }
    parts = g_strsplit(rel, "/", -1);
    for (i = 0; parts[i]; i++) {
        if (!*parts[i] || !strcmp(parts[i], ".") || !strcmp(parts[i], "..")) {
            error_setg(errp, "Base %s: manifest names file '%s': '.', '..' "
                       "and empty components are not allowed", store->dir,
                       rel);
            return NULL;
        }
    }
    return g_build_filename(store->dir, rel, NULL);
}

QDict *handoff_manifest_from_text(const char *path, const char *text,
                                  Error **errp)
{
    Error *local_err = NULL;
    QObject *obj = qobject_from_json(text, &local_err);
    QDict *manifest = qobject_to(QDict, obj);

    if (!manifest) {
        qobject_unref(obj);
        if (local_err) {
            error_propagate_prepend(errp, local_err, "%s: ", path);
        } else {
            error_setg(errp, "%s is not a JSON object", path);
        }
        return NULL;
    }
    return manifest;
}

/*
 * Binds a manifest entry to the index region of that name and kind: same
 * size and same file. Each region is bound once.
 */
static bool bind_region(HandoffBaseStore *store, const char *name,
                        HandoffRegionKind kind, uint64_t size,
                        const char *file, unsigned long *bound,
                        uint32_t *region, Error **errp)
{
    size_t i, n = handoff_base_region_count(store->base);

    for (i = 0; i < n; i++) {
        HandoffRegionInfo info;

        if (handoff_base_region_info(store->base, i, &info) < 0 ||
            strcmp(info.name, name) || info.kind != kind) {
            continue;
        }
        if (info.size != size) {
            error_setg(errp, "Base %s: region '%s' is %" PRIu64
                       " bytes in the index, %" PRIu64 " in the manifest",
                       store->dir, name, info.size, size);
            return false;
        }
        if (g_strcmp0(handoff_base_region_file(store->base, i), file)) {
            error_setg(errp, "Base %s: region '%s' is file '%s' in the "
                       "manifest, '%s' in the index", store->dir, name, file,
                       handoff_base_region_file(store->base, i) ?: "");
            return false;
        }
        if (test_and_set_bit(i, bound)) {
            error_setg(errp, "Base %s: region '%s' named twice in the "
                       "manifest", store->dir, name);
            return false;
        }
        *region = i;
        return true;
    }
    error_setg(errp, "Base %s: region '%s' missing from the index",
               store->dir, name);
    return false;
}

/* A size in the manifest: an unsigned JSON number, nothing else. */
static bool manifest_size(QDict *dict, uint64_t *size)
{
    QNum *num = qobject_to(QNum, qdict_get(dict, "size"));

    return num && qnum_get_try_uint(num, size);
}

static bool parse_memory(HandoffBaseStore *store, QList *memory,
                         Error **errp)
{
    QListEntry *e;
    size_t i = 0;

    store->n_memory = qlist_size(memory);
    store->memory = g_new0(HandoffBaseMemory, store->n_memory);
    QLIST_FOREACH_ENTRY(memory, e) {
        QDict *m = qobject_to(QDict, qlist_entry_obj(e));

        if (!m || !qdict_get_try_str(m, "name") ||
            !qdict_get_try_str(m, "file") ||
            !manifest_size(m, &store->memory[i].size)) {
            error_setg(errp, "Base %s: bad memory entry in the manifest",
                       store->dir);
            return false;
        }
        /* RAM is read through the index, but no entry may point out. */
        g_autofree char *path = base_file(store, qdict_get_str(m, "file"),
                                          errp);

        if (!path) {
            return false;
        }
        store->memory[i].name = g_strdup(qdict_get_str(m, "name"));
        store->memory[i].file = g_strdup(qdict_get_str(m, "file"));
        i++;
    }
    return true;
}

bool handoff_manifest_parse(HandoffBaseStore *store, QDict *manifest,
                            Error **errp)
{
    QList *memory = qdict_get_qlist(manifest, "memory");
    QDict *disk = qdict_get_qdict(manifest, "disk");

    if (g_strcmp0(qdict_get_try_str(manifest, "format"),
                  "qemu-handoff-base/1") || !memory || !disk ||
        !qdict_get_try_str(disk, "file") ||
        !manifest_size(disk, &store->disk_size)) {
        error_setg(errp, "Base %s: not a qemu-handoff-base/1 manifest",
                   store->dir);
        return false;
    }
    store->machine = g_strdup(qdict_get_try_str(manifest, "machine") ?: "");
    store->layout = qdict_get_qdict(manifest, "layout");
    qobject_ref(store->layout);
    store->disk_file = g_strdup(qdict_get_str(disk, "file"));
    store->disk_path = base_file(store, store->disk_file, errp);
    if (!store->disk_path) {
        return false;
    }
    store->devices_path = base_file(store, HANDOFF_BASE_DEVICES, errp);
    return store->devices_path && parse_memory(store, memory, errp);
}

/* Every region of the index is the disk or one RAM block: nothing else. */
bool handoff_manifest_bind(HandoffBaseStore *store, Error **errp)
{
    size_t n = handoff_base_region_count(store->base), i;
    g_autofree unsigned long *bound = bitmap_new(n);

    for (i = 0; i < store->n_memory; i++) {
        HandoffBaseMemory *m = &store->memory[i];

        if (!bind_region(store, m->name, HANDOFF_REGION_MEMORY, m->size,
                         m->file, bound, &m->region, errp)) {
            return false;
        }
    }
    if (!bind_region(store, HANDOFF_BASE_DISK_REGION, HANDOFF_REGION_DISK,
                     store->disk_size, store->disk_file, bound,
                     &store->disk_region, errp)) {
        return false;
    }
    i = find_first_zero_bit(bound, n);
    if (i < n) {
        HandoffRegionInfo info = { .name = "?" };

        handoff_base_region_info(store->base, i, &info);
        error_setg(errp, "Base %s: index region '%s' is not in the manifest",
                   store->dir, info.name);
        return false;
    }
    return true;
}
