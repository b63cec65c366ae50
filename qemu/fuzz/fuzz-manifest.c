/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: a base's manifest (base.json), which whoever can write
 * a base directory controls, through QEMU's own parser and checks
 * (migration/handoff-manifest.c): JSON to QDict, fields, file names, and
 * the binding to the engine's index of a small real base made at start-up
 * (a RAM block "pc.ram" in memory/0.raw, the disk in disk.raw).
 *
 * Besides crashes and sanitizer reports it checks what a manifest that is
 * accepted promises: every file it names lies inside the base directory,
 * and every region of the index is bound exactly once.
 *
 * Built against the configured QEMU tree by scripts/fuzz.sh (target
 * "manifest"), linking QEMU's libqemuutil and the engine.
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "handoff-internal.h"

#define REGION_BYTES (64 * 1024)

static char *base_dir;
static HandoffBase *base;

static void write_region(const char *rel, uint8_t fill)
{
    g_autofree char *path = g_build_filename(base_dir, rel, NULL);
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree uint8_t *data = g_malloc(REGION_BYTES);

    memset(data, fill, REGION_BYTES);
    if (g_mkdir_with_parents(dir, 0700) < 0 ||
        !g_file_set_contents(path, (char *)data, REGION_BYTES, NULL)) {
        abort();
    }
}

static void make_base(void)
{
    g_autofree char *mem = NULL, *disk = NULL, *index = NULL;
    HandoffRegionSpec regions[2];

    base_dir = g_dir_make_tmp("fuzz-manifest-XXXXXX", NULL);
    if (!base_dir) {
        abort();
    }
    write_region("memory/0.raw", 0x5a);
    write_region(HANDOFF_BASE_DISK, 0xa5);
    mem = g_build_filename(base_dir, "memory/0.raw", NULL);
    disk = g_build_filename(base_dir, HANDOFF_BASE_DISK, NULL);
    index = g_build_filename(base_dir, HANDOFF_BASE_INDEX, NULL);
    regions[0] = (HandoffRegionSpec){ "pc.ram", HANDOFF_REGION_MEMORY, mem,
                                      NULL, 0 };
    regions[1] = (HandoffRegionSpec){ HANDOFF_BASE_DISK_REGION,
                                      HANDOFF_REGION_DISK, disk, NULL, 0 };
    if (handoff_base_create(regions, 2, index, &base) < 0) {
        abort();
    }
}

/* A path the store holds: the base directory, "/", a clean relative name. */
static void check_inside(const char *path)
{
    size_t n = strlen(base_dir);

    if (strncmp(path, base_dir, n) || path[n] != '/' ||
        strstr(path + n, "/../") || strstr(path + n, "/./") ||
        g_str_has_suffix(path, "/..") || strstr(path + n, "//")) {
        abort();
    }
}

static void check_bound(HandoffBaseStore *store)
{
    size_t n = handoff_base_region_count(store->base), i;
    g_autofree bool *seen = g_new0(bool, n);

    for (i = 0; i <= store->n_memory; i++) {
        uint32_t r = i < store->n_memory ? store->memory[i].region
                                         : store->disk_region;

        if (r >= n || seen[r]) {
            abort();
        }
        seen[r] = true;
    }
    if (store->n_memory + 1 != n) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    HandoffBaseStore *store;
    g_autofree char *text = NULL;
    Error *err = NULL;
    QDict *manifest;

    if (!base) {
        make_base();
    }
    if (size > HANDOFF_MANIFEST_MAX_BYTES) {
        return 0;
    }
    /* As read_manifest() gives it: the file's bytes, NUL-terminated. */
    text = g_strndup((const char *)data, size);
    store = g_new0(HandoffBaseStore, 1);
    store->dir = g_strdup(base_dir);
    manifest = handoff_manifest_from_text("base.json", text, &err);
    if (manifest && handoff_manifest_parse(store, manifest, &err)) {
        size_t i;

        check_inside(store->disk_path);
        check_inside(store->devices_path);
        for (i = 0; i < store->n_memory; i++) {
            g_autofree char *p = g_build_filename(base_dir,
                                                  store->memory[i].file, NULL);
            check_inside(p);
        }
        store->base = base;
        if (handoff_manifest_bind(store, &err)) {
            check_bound(store);
        }
        store->base = NULL;     /* shared by every input */
    }
    qobject_unref(manifest);
    error_free(err);
    handoff_base_store_free(store);
    return 0;
}
