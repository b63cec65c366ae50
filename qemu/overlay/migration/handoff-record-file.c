/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The working-set log handoff-record-stop writes: a line naming the format,
 * then one line "REGION CHUNK NS" per chunk in the order of first touch,
 * REGION the region's name in the base (docs/overlay-format.md,
 * "Working-set order"): what `qemu-handoff encode --order` reads. Text, so that a person
 * can read it and tools of any language parse it; written whole (a
 * temporary file renamed), so that no reader sees half of one.
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "handoff-internal.h"
#include "handoff-record.h"

bool handoff_record_write(const char *path, const HandoffRecordEntry *order,
                          uint64_t n, char *const *region_names,
                          size_t n_regions, Error **errp)
{
    g_autoptr(GString) text = g_string_sized_new(32 + n * 24);
    g_autoptr(GError) gerr = NULL;
    uint64_t i;

    g_string_append(text, HANDOFF_RECORD_MAGIC "\n");
    for (i = 0; i < n; i++) {
        /* Regions come from the base's own list: a gap is a bug here. */
        assert(order[i].region < n_regions && region_names[order[i].region]);
        g_string_append_printf(text, "%s %" PRIu64 " %" PRId64 "\n",
                               region_names[order[i].region], order[i].chunk,
                               order[i].ns);
    }
    if (!g_file_set_contents(path, text->str, text->len, &gerr)) {
        error_setg(errp, "cannot write the working set to %s: %s", path,
                   gerr->message);
        return false;
    }
    return true;
}
