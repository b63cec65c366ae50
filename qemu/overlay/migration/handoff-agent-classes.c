/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What every guest page frame holds (free, page cache, anonymous,
 * kernel), asked of the guest agent for a breakdown of the VM's memory
 * (scripts/vm-breakdown.py --qmp). QMP handoff-agent-page-classes sends
 * the request and returns; the agent's answer, one byte per page frame
 * (handoff_agent_protocol.h), is written to the file as it arrives, and
 * the HANDOFF_AGENT_PAGE_CLASSES event says when the map is complete or
 * why there is none. It returns at once because the answer comes through
 * the main loop the command runs in. The map is written beside @path and
 * renamed to it when complete: a reader never sees half a map, and a
 * request that fails leaves a file already at @path alone.
 *
 * The map is statistics: its size is bounded by the machine's memory,
 * its bytes are the guest's word, and nothing a handoff sends or skips
 * depends on it. Main loop only (the BQL).
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qapi/qapi-events-handoff.h"
#include "qemu/timer.h"
#include "handoff-internal.h"
#include "handoff_agent_protocol.h"
#include "trace.h"

/*
 * An agent that sends nothing for this long is taken as gone (a large map
 * may take longer as a whole: each byte that arrives re-arms the timer).
 */
#define CLASSES_SILENCE_S 10

static struct {
    int fd;                     /* of the map being written; -1: none */
    char *path;
    char *part;                 /* where it is written until complete */
    uint64_t generation;        /* of the last request (awaited: fd >= 0) */
    int write_errno;            /* the first failed write's */
    QEMUTimer *timer;
} classes = { .fd = -1 };

/* Ends the waiting request: the event, and no file left on error. */
static void classes_finish(uint64_t pages, const char *error)
{
    g_autofree char *path = classes.path;
    g_autofree char *part = classes.part;
    g_autofree char *why = NULL;

    timer_del(classes.timer);
    if (qemu_close(classes.fd) < 0 && !error) {
        error = "cannot write the map";
    }
    if (!error && rename(part, path) < 0) {
        error = why = g_strdup_printf("cannot rename %s: %s", part,
                                      strerror(errno));
    }
    classes.fd = -1;
    classes.path = classes.part = NULL;
    if (error) {
        unlink(part);
    }
    trace_handoff_agent_classes_end(path, pages, error ? error : "");
    qapi_event_send_handoff_agent_page_classes(path, !error, pages,
                                               !!error, error);
}

static void classes_timeout(void *opaque)
{
    g_autofree char *why = g_strdup_printf("the guest agent sent nothing "
                                           "for %d s", CLASSES_SILENCE_S);

    if (classes.fd >= 0) {
        classes_finish(0, why);
    }
}

static void classes_rearm(void)
{
    timer_mod(classes.timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) +
                             CLASSES_SILENCE_S * 1000);
}

static bool handoff_agent_classes_expected(uint64_t generation)
{
    return classes.fd >= 0 && generation == classes.generation;
}

/*
 * A map that began while its request was awaited may go on after the
 * request timed out; its bytes then belong to no file.
 */
static void handoff_agent_classes_data(uint64_t generation,
                                       const uint8_t *buf, size_t len)
{
    if (!handoff_agent_classes_expected(generation)) {
        return;
    }
    classes_rearm();
    if (!classes.write_errno && qemu_write_full(classes.fd, buf, len) != len) {
        classes.write_errno = errno;
    }
}

static void handoff_agent_classes_end(uint64_t generation, uint64_t pages)
{
    g_autofree char *why = NULL;

    if (!handoff_agent_classes_expected(generation)) {
        return;
    }
    if (classes.write_errno) {
        why = g_strdup_printf("cannot write %s: %s", classes.path,
                              strerror(classes.write_errno));
    }
    classes_finish(pages, why);
}

/* The agent's port hands the answer to these (handoff-internal.h). */
static const HandoffAgentClassesSink classes_sink = {
    .expected = handoff_agent_classes_expected,
    .data = handoff_agent_classes_data,
    .end = handoff_agent_classes_end,
};

void qmp_handoff_agent_page_classes(const char *path, Error **errp)
{
    g_autofree char *part = g_strdup_printf("%s.part", path);
    int fd;

    if (classes.fd >= 0) {
        error_setg(errp, "a page-class map is still awaited (for %s)",
                   classes.path);
        return;
    }
    /*
     * A new file, never one that is there: a link planted at PATH.part
     * would have QEMU (often root) truncate and write where it points.
     */
    fd = qemu_create(part, O_WRONLY | O_EXCL | O_NOFOLLOW, 0600, errp);
    if (fd < 0) {
        return;
    }
    if (!handoff_agent_request_classes(classes.generation + 1,
                                       &classes_sink, errp)) {
        qemu_close(fd);
        unlink(part);
        return;
    }
    if (!classes.timer) {
        classes.timer = timer_new_ms(QEMU_CLOCK_REALTIME, classes_timeout,
                                     NULL);
    }
    classes.generation++;
    classes.fd = fd;
    classes.path = g_strdup(path);
    classes.part = g_steal_pointer(&part);
    classes.write_errno = 0;
    classes_rearm();
    trace_handoff_agent_classes_request(path, classes.generation);
}
