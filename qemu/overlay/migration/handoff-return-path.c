/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * How the source names a handoff's failure on the destination's side:
 * the destination's own reason, sent over the return path (patch 0003),
 * or, when the destination is gone before its verdict, the lost
 * destination (patch 0012) rather than the broken stream that follows.
 */
#include "qemu/osdep.h"
#include "migration/handoff.h"
#include "migration.h"
#include "qapi/error.h"
#include "qemu/lockable.h"
#include "qemu-file.h"

/*
 * Return-path thread. The destination's reason is the cause of whatever
 * the outgoing stream runs into next (a reset, a closed socket), so it is
 * recorded first, and the stream is shut down at once: sending on to a
 * destination that has given up only delays the failure.
 */
void handoff_rp_error(MigrationState *s, const char *text, size_t len)
{
    Error *err = NULL;

    error_setg(&err, "Handoff failed on the destination: %.*s", (int)len,
               text);
    migrate_set_error(s, err);
    error_free(err);
    WITH_QEMU_LOCK_GUARD(&s->qemu_file_lock) {
        if (s->to_dst_file) {
            qemu_file_shutdown(s->to_dst_file);
        }
    }
}

void handoff_rp_lost(MigrationState *s, int err)
{
    Error *local = NULL;

    /* A cancel ends the return path too; it is no failure to explain. */
    if (s->state == MIGRATION_STATUS_CANCELLING ||
        s->state == MIGRATION_STATUS_CANCELLED) {
        return;
    }
    /* The first error is kept: a verdict the destination sent wins. */
    error_setg(&local, "Handoff failed: the connection to the destination "
               "ended before it confirmed the handoff (its QEMU exited, or "
               "the link was cut): %s", strerror(-err));
    migrate_set_error(s, local);
    error_free(local);
}

/*
 * A destination that exited, or a cut link, shows on the outgoing stream
 * often before the return-path thread has read what the destination sent
 * last: its verdict, or the end of the connection. That thread records
 * the cause (handoff_rp_lost, or the verdict); the stream's own error
 * ("Unable to write to socket: Connection reset by peer") would only hide
 * it, and which of the two threads gets there first is a race. So, unless
 * a cause is recorded already, wait for the return path to end (a peer
 * that closed has nothing more to send, so this is quick; bounded at 2 s
 * in case it never does) before the stream's error is recorded. Only the
 * migration thread sleeps here, without the BQL.
 *
 * Any error: qemu_fflush reports every failed write as -EIO, whatever the
 * socket said. The check for EPIPE and ECONNRESET that stood here never
 * matched a write, and the cause depended on the race; it was lost once
 * in CI under load (test_killed_destination).
 *
 * A plain migration with a return path is called here too: aimed at a
 * handoff destination it is refused with a reason on the return path,
 * and the same race lost that reason once in CI under load
 * (test_plain_migrate_into_handoff_destination). Not in postcopy, whose
 * failed write must pause for recovery at once.
 */
static bool cause_recorded(MigrationState *s)
{
    QEMU_LOCK_GUARD(&s->error_mutex);
    return s->error;
}

void handoff_stream_failed(MigrationState *s)
{
    int waited_ms;

    for (waited_ms = 0; waited_ms < 2000 && s->rp_state.rp_thread_created &&
         !qatomic_read(&s->rp_state.error) && !cause_recorded(s);
         waited_ms += 10) {
        g_usleep(10 * 1000);
    }
}
