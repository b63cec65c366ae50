/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * virtio-balloon's free page hints (free-page-hint=on) for a handoff, for
 * guests that have the balloon but not the guest agent.
 *
 * The balloon drives hinting from the precopy notifiers that ram.c fires
 * around its dirty-log sync: BEFORE_BITMAP_SYNC stops the guest's
 * reporting, AFTER_BITMAP_SYNC starts a new one with a new command ID.
 * Handoff fires the same notifiers around its own sync
 * (handoff-save-rounds.c),
 * and ram.c's qemu_guest_free_page_hint(), which the balloon calls for
 * each block the guest hints, hands the hint here while the handoff
 * capability is on (ram.c's own bitmaps are idle then).
 *
 * A hint is a block the guest driver allocated after the round's sync
 * (the command starts after it) and holds while it is reported; the
 * guest may take it back under memory pressure and write it, and that
 * write reaches the dirty log like any other: the same rule as the
 * agent's reports (docs/guest-agent.md). Hints are kept for the round
 * they were given in only: the next round's BEFORE_BITMAP_SYNC stops the
 * command, and handoff_hints_stop() drops what was not taken.
 */

#include "qemu/osdep.h"
#include "exec/cpu-common.h"
#include "exec/ramblock.h"
#include "hw/virtio/virtio-balloon.h"
#include "migration/handoff.h"
#include "qemu/thread.h"
#include "handoff-internal.h"
#include "trace.h"

/* Hints kept per round: 4 MiB blocks (the Linux driver's) of 1 TiB. */
#define MAX_HINTS (1u << 18)

static struct {
    QemuMutex lock;
    uint64_t generation;        /* hints accepted for it (0: none) */
    GArray *hints;              /* HandoffFreeExtent */
} hint_state;

static void hint_state_init(void)
{
    static bool done;

    if (!done) {
        qemu_mutex_init(&hint_state.lock);
        done = true;
    }
}

bool handoff_hints_possible(void)
{
    bool ambiguous = false;
    Object *obj = object_resolve_path_type("", TYPE_VIRTIO_BALLOON,
                                           &ambiguous);

    return ambiguous ||
           (obj && virtio_has_feature(VIRTIO_BALLOON(obj)->host_features,
                                      VIRTIO_BALLOON_F_FREE_PAGE_HINT));
}

void handoff_hints_accept(uint64_t generation)
{
    hint_state_init();
    qemu_mutex_lock(&hint_state.lock);
    hint_state.generation = generation;
    if (hint_state.hints) {
        g_array_set_size(hint_state.hints, 0);
    }
    qemu_mutex_unlock(&hint_state.lock);
}

void handoff_hints_stop(void)
{
    handoff_hints_accept(0);
}

GArray *handoff_hints_take(uint64_t generation)
{
    GArray *hints = NULL;

    hint_state_init();
    qemu_mutex_lock(&hint_state.lock);
    if (generation && generation == hint_state.generation &&
        hint_state.hints && hint_state.hints->len) {
        hints = hint_state.hints;
        hint_state.hints = NULL;
    }
    qemu_mutex_unlock(&hint_state.lock);
    return hints;
}

/* From qemu_guest_free_page_hint(), in the balloon's iothread. */
void handoff_free_page_hint(void *addr, size_t len)
{
    HandoffFreeExtent e = { .bytes = len };
    ram_addr_t offset;

    hint_state_init();
    /*
     * The balloon maps what the guest hands it; anything but a whole
     * stretch of one RAM block (a bounce buffer, say) is not a hint.
     */
    RCU_READ_LOCK_GUARD();
    e.rb = qemu_ram_block_from_host(addr, false, &offset);
    e.offset = offset;
    qemu_mutex_lock(&hint_state.lock);
    if (!e.rb || offset >= e.rb->used_length ||
        len > e.rb->used_length - offset) {
        qemu_mutex_unlock(&hint_state.lock);
        trace_handoff_hint_refused(len);
        return;
    }
    if (hint_state.generation) {
        if (hint_state.hints && hint_state.hints->len >= MAX_HINTS) {
            /* A guest repeating itself. */
            qemu_mutex_unlock(&hint_state.lock);
            trace_handoff_hint_refused(len);
            return;
        }
        if (!hint_state.hints) {
            hint_state.hints = g_array_new(false, false,
                                           sizeof(HandoffFreeExtent));
        }
        g_array_append_val(hint_state.hints, e);
    }
    qemu_mutex_unlock(&hint_state.lock);
}
