/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The working-set log handoff-record-stop writes: a line naming the format,
 * then one line "REGION CHUNK NS" per chunk in the order of first touch,
 * REGION the region's name in the base (docs/overlay-format.md,
 * "Working-set order"): what `qemu-handoff encode --order` reads. Text,
 * so that a person can read it and tools of any language parse it;
 * written whole into the recording's new PATH.part, which stop renames,
 * so that no reader sees half of one.
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "handoff-internal.h"
#include "handoff-record.h"

bool handoff_record_write(int fd, const HandoffBase *base,
                          const HandoffRecordEntry *order, uint64_t n,
                          Error **errp)
{
    g_autoptr(GString) text = g_string_sized_new(32 + n * 24);
    uint64_t i;

    g_string_append(text, HANDOFF_RECORD_MAGIC "\n");
    for (i = 0; i < n; i++) {
        HandoffRegionInfo info;

        /* Regions come from the base itself: one it lacks is a bug here. */
        if (handoff_base_region_info(base, order[i].region, &info) < 0) {
            g_assert_not_reached();
        }
        g_string_append_printf(text, "%s %" PRIu64 " %" PRId64 "\n",
                               info.name, order[i].chunk, order[i].ns);
    }
    if (qemu_write_full(fd, text->str, text->len) != text->len ||
        fsync(fd)) {
        error_setg_errno(errp, errno, "cannot write the working set");
        return false;
    }
    return true;
}
