/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Early start (docs/design/early-start.md): a VM launched from an
 * early-start overlay runs once its device state is in, while the
 * segments of its engine stream are still being applied.
 *
 * The overlay's migration stream carries the table part, then the device
 * state; the segments follow it in the file (docs/overlay-format.md,
 * "Early start"). When the table part is in (authenticated by the root
 * the checked description names, its local records applied), and before
 * any device loads:
 *
 * - memory: each base RAM region is registered with userfaultfd (MISSING
 *   mode) and the chunks a segment carries are emptied. Base and local
 *   chunks stay in place, so only a carried chunk faults; the fault is
 *   answered by applying its segment, whose placement (UFFDIO_COPY, whole
 *   pages, atomically: postcopy's rule) wakes the accessor.
 * - disk: a handoff-early filter over each carried disk holds back a
 *   request that would see base bytes where a segment carries others; it
 *   names the chunks it waits for, whose segments are applied next.
 *
 * One thread, this file's, applies every segment: those something waits
 * for first (with their dependencies), the rest in file order, the
 * working set first. With a segment feed (handoff-early-feed.c) the
 * segments are still being written into the file: the thread applies
 * each once its sender says it is in, and asks for what something waits
 * for; the file's digest is checked once it is whole. It never takes the BQL, since a vCPU, or the main
 * thread loading devices, may hold it while blocked on a fault only this
 * thread can answer; disk placements go to the filter's queue, which the
 * main loop (or an iothread) drains, and a full queue never blocks it.
 *
 * Each segment is checked against the authenticated table by the engine
 * before a byte of it is placed. Anything wrong after the VM may have run
 * (a segment that fails its check, a page that cannot be placed) ends
 * QEMU at once, without unregistering: an unregistered range would wake
 * its waiters onto zero pages (§9 item 5), and a guest must never run on
 * state that is not its own.
 *
 * KVM: the same protocol as postcopy's destination (vCPUs fault in the
 * kernel on gup and wait on the uffd; memslots keep their host addresses,
 * so UFFDIO_COPY needs no memslot update). Only TCG runs here.
 */
#include "qemu/osdep.h"
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include "block/handoff-early.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "migration/blocker.h"
#include "migration/handoff.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qemu/bitmap.h"
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"
#include "sysemu/runstate.h"
#include "sysemu/runstate-action.h"
#include "sysemu/sysemu.h"
#include "sysemu/block-backend.h"
#include "handoff-early-feed.h"
#include "handoff-early-start.h"
#include "handoff-load-segments.h"
#include "trace.h"

/* Disk placements held here while the filter's queue is full (bytes). */
#define BACKLOG_MAX (64 << 20)
/* A disk placement gathers at most this many consecutive chunks. */
#define BACKLOG_RUN 64

typedef struct EarlyRegion {
    HandoffEarlyStart *es;
    uint32_t region;
    uint8_t *host;              /* RAM; NULL for a disk */
    uint64_t size;
    bool registered;
    bool no_hugepages;          /* THP off while registered (postcopy's) */
    BlockDriverState *filter;   /* a disk's */
    BDRVHandoffEarlyState *early;
    /*
     * A disk's chunks named as waited for, each once: the filter names
     * every absent chunk of a request each time it waits, and a guest
     * must not make this grow beyond one bit per chunk.
     */
    unsigned long *demanded;
} EarlyRegion;

struct HandoffEarlyStart {
    HandoffEarlyStartLoad load;
    uint32_t count;
    uint8_t *applied;           /* per segment; this thread only */
    uint8_t *wanted;            /* per segment: apply_segment's closure */
    uint8_t *arrived;           /* per segment: whole in the file */
    uint8_t *waited;            /* per segment: in @pending */
    GArray *pending;            /* PendingSegment: not all in yet */
    GArray *pending_faults;     /* PendingFault: accessors waiting on them */
    HandoffEarlyFeed *feed;     /* NULL: the file was whole at the start */
    bool fed;                   /* a feed, kept or gone */
    uint32_t feed_arrived, feed_wanted;     /* its counts, once it is gone */
    uint32_t applied_count;
    uint8_t *buf;
    int uffd;
    int wake_fd;                /* eventfd: a disk request waits */
    EarlyRegion *regions;
    size_t n_regions;
    Error *blocker;
    bool discards_disabled;
    QemuThread thread;

    QemuMutex demand_lock;      /* guards @demand */
    GArray *demand;             /* EarlyDemand: disk chunks waited for */

    GArray *backlog;            /* HandoffEarlyChunks, per region below */
    GArray *backlog_region;     /* uint32_t */
    uint64_t backlog_bytes;
    int64_t next_background_ns; /* the rate's pace */

    /* Counters, read by query-handoff-early-start. */
    uint64_t faults, demanded, disk_demands, bytes;
    /* Faults that waited for a segment not in yet: summed, longest. */
    int64_t fault_wait_ns, fault_wait_max_ns;
    int64_t t0, ended_ns;
    bool completed;
    QEMUTimer *finish_timer;    /* main loop: the end, once placed */
    Notifier shutdown, exit;
};

typedef struct EarlyDemand {
    uint32_t region;
    uint64_t chunk;
} EarlyDemand;

/* A fault whose segment is not in yet: checked once it is applied. */
typedef struct PendingFault {
    EarlyRegion *region;
    uint64_t page;
    uint32_t segment;
    int64_t since;              /* QEMU_CLOCK_REALTIME ns of the fault */
} PendingFault;

/* A segment something waits for, and the last one it lacked. */
typedef struct PendingSegment {
    uint32_t segment;
    uint32_t missing;
} PendingSegment;

static HandoffEarlyStart *early_start;

/* --- failure: the VM must not go on ------------------------------------- */

static void G_GNUC_NORETURN G_GNUC_PRINTF(1, 2) early_fatal(const char *fmt,
                                                            ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("handoff: early start: %s: the VM stops", msg);
    _exit(EXIT_FAILURE);
}

static void G_GNUC_NORETURN early_engine_fatal(int rc)
{
    const char *cause = handoff_last_error_message();

    early_fatal("%s", *cause ? cause : handoff_error_name(rc));
}

/* --- the decoder's writer ------------------------------------------------ */

static EarlyRegion *region_of(HandoffEarlyStart *es, uint32_t region)
{
    size_t i;

    for (i = 0; i < es->n_regions; i++) {
        if (es->regions[i].region == region) {
            return &es->regions[i];
        }
    }
    return NULL;
}

/* Gathers a disk chunk into the backlog, consecutive ones together. */
static void backlog_add(HandoffEarlyStart *es, uint32_t region,
                        uint64_t index, const void *data)
{
    HandoffEarlyChunks *last = es->backlog->len ?
        &g_array_index(es->backlog, HandoffEarlyChunks, es->backlog->len - 1) :
        NULL;
    uint32_t last_region = es->backlog->len ?
        g_array_index(es->backlog_region, uint32_t, es->backlog->len - 1) : 0;

    if (last && last_region == region && last->first + last->count == index &&
        last->count < BACKLOG_RUN) {
        last->data = g_realloc(last->data,
                               (last->count + 1) * HANDOFF_CHUNK_SIZE);
        memcpy(last->data + last->count * HANDOFF_CHUNK_SIZE, data,
               HANDOFF_CHUNK_SIZE);
        last->count++;
    } else {
        HandoffEarlyChunks c = {
            .first = index, .count = 1,
            .data = g_memdup2(data, HANDOFF_CHUNK_SIZE),
        };

        g_array_append_val(es->backlog, c);
        g_array_append_val(es->backlog_region, region);
    }
    es->backlog_bytes += HANDOFF_CHUNK_SIZE;
}

/*
 * UFFDIO_COPY of one chunk, waking who waits on it (util/userfaultfd.c's
 * helper reports every failure, EEXIST included, which a probe expects).
 */
static int place_page(HandoffEarlyStart *es, uint8_t *dst, const void *src)
{
    struct uffdio_copy c = {
        .dst = (uintptr_t)dst,
        .src = (uintptr_t)src,
        .len = HANDOFF_CHUNK_SIZE,
    };

    return ioctl(es->uffd, UFFDIO_COPY, &c);
}

/*
 * Whether the page at @addr is present, asked of the kernel: a zero page
 * placed without waking anyone (DONTWAKE) fails with EEXIST if it is. If
 * it was missing, a zero page is there now, but whoever waits for it
 * still waits, and QEMU is about to end.
 */
static bool page_present(HandoffEarlyStart *es, uint64_t addr)
{
    struct uffdio_zeropage z = {
        .range = { .start = addr, .len = HANDOFF_CHUNK_SIZE },
        .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE,
    };

    return ioctl(es->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno == EEXIST;
}

int handoff_early_start_write(HandoffEarlyStart *es, uint32_t region,
                              uint64_t index, const void *data)
{
    EarlyRegion *r = region_of(es, region);
    uint64_t offset = index * HANDOFF_CHUNK_SIZE;

    if (!r || offset + HANDOFF_CHUNK_SIZE > r->size) {
        return -ERANGE;
    }
    if (!r->host) {
        backlog_add(es, region, index, data);
        return 0;
    }
    /* Only this thread places, each carried chunk once: never EEXIST. */
    if (place_page(es, r->host + offset, data)) {
        int err = errno;

        early_fatal("cannot place chunk %" PRIu64 " of region %u: %s%s",
                    index, region, strerror(err),
                    err == EEXIST ? " (filled before its segment came)" : "");
    }
    return 0;
}

/* Hands the backlog to the filters in order, as far as their queues take. */
/* A placement the filter failed to write: every request gets its error. */
static void check_disk(EarlyRegion *r)
{
    int error = handoff_early_error(r->early);

    if (error) {
        early_fatal("cannot write disk region %u: %s", r->region,
                    strerror(-error));
    }
}

static void backlog_submit(HandoffEarlyStart *es)
{
    Error *err = NULL;
    guint done = 0;

    while (done < es->backlog->len) {
        HandoffEarlyChunks *c = &g_array_index(es->backlog, HandoffEarlyChunks,
                                               done);
        EarlyRegion *r = region_of(es, g_array_index(es->backlog_region,
                                                     uint32_t, done));

        if (!handoff_early_place_many(r->early, c, 1, &err)) {
            HandoffEarlyStats st;

            check_disk(r);
            handoff_early_stats(r->early, &st);
            if (!st.queued_bytes) {
                /* Refused with nothing queued: not for room (read-only?) */
                early_fatal("disk region %u: %s", r->region,
                            error_get_pretty(err));
            }
            error_free(err);
            err = NULL;
            break;              /* full: the main loop is writing */
        }
        es->backlog_bytes -= c->count * HANDOFF_CHUNK_SIZE;
        done++;
    }
    g_array_remove_range(es->backlog, 0, done);
    g_array_remove_range(es->backlog_region, 0, done);
}

/* --- applying segments --------------------------------------------------- */

/* Segment @k alone, its dependencies applied already. */
static void apply_one(HandoffEarlyStart *es, uint32_t k, bool demanded)
{
    Error *err = NULL;
    uint32_t len;
    int rc;

    if (!handoff_segment_read(es->load.fd, es->load.table, es->load.start, k,
                              es->buf, &len, &err)) {
        early_fatal("%s", error_get_pretty(err));
    }
    rc = handoff_decoder_apply_segment(es->load.dec, k, es->buf, len);
    if (rc < 0) {
        early_engine_fatal(rc);
    }
    es->applied[k] = 1;
    qatomic_inc(&es->applied_count);
    qatomic_add(&es->bytes, len);
    if (demanded) {
        qatomic_inc(&es->demanded);
    }
    trace_handoff_early_start_segment(k, len, demanded);
}

/*
 * Marks in es->wanted segment @k and every segment it needs that is not
 * applied yet; returns the lowest. A worklist, not recursion: a crafted
 * table may chain a hundred thousand segments.
 */
static uint32_t want_closure(HandoffEarlyStart *es, uint32_t k)
{
    g_autoptr(GArray) work = NULL;
    g_autofree uint32_t *deps = NULL;
    size_t cap = 0, n, i;
    uint32_t lowest = k;

    work = g_array_new(false, false, sizeof(uint32_t));
    g_array_append_val(work, k);
    es->wanted[k] = 1;
    while (work->len) {
        uint32_t w = g_array_index(work, uint32_t, work->len - 1);
        int rc;

        g_array_set_size(work, work->len - 1);
        rc = handoff_segment_table_entry(es->load.table, w, NULL, NULL, NULL,
                                         NULL, 0, &n);
        if (rc == 0 && n > cap) {
            cap = n;
            deps = g_renew(uint32_t, deps, cap);
        }
        if (rc == 0 && n) {
            rc = handoff_segment_table_entry(es->load.table, w, NULL, NULL,
                                             NULL, deps, cap, &n);
        }
        if (rc < 0) {
            early_engine_fatal(rc);
        }
        for (i = 0; i < n; i++) {
            if (!es->applied[deps[i]] && !es->wanted[deps[i]]) {
                es->wanted[deps[i]] = 1;
                lowest = MIN(lowest, deps[i]);
                g_array_append_val(work, deps[i]);
            }
        }
    }
    return lowest;
}

static void feed_want(HandoffEarlyStart *es, uint32_t k)
{
    Error *err = NULL;

    if (!es->feed) {                /* the whole file was there */
        early_fatal("segment %u is not in the overlay", k);
    }
    if (!handoff_early_feed_want(es->feed, k, &err)) {
        early_fatal("%s", error_get_pretty(err));
    }
    trace_handoff_early_start_want(k);
}

/*
 * Segment @k and every segment it needs that is not applied yet, in
 * number order: a dependency is an earlier segment, so that order
 * applies each after its own. If some are not in the file yet, none is
 * applied: the feed is asked for those (dependencies first), the last
 * of them returned in @missing, and false returned.
 */
static bool apply_segment(HandoffEarlyStart *es, uint32_t k, bool demanded,
                          uint32_t *missing)
{
    uint32_t lowest, j;
    bool all_in = true;

    if (es->applied[k]) {
        return true;
    }
    lowest = want_closure(es, k);
    for (j = lowest; j <= k; j++) {
        if (es->wanted[j] && !es->arrived[j]) {
            all_in = false;
            *missing = j;
            feed_want(es, j);
        }
    }
    for (j = lowest; j <= k; j++) {
        if (es->wanted[j]) {
            es->wanted[j] = 0;
            if (all_in) {
                apply_one(es, j, demanded);
            }
        }
    }
    return all_in;
}

/*
 * Something waits for segment @k: applied now, or once it and what it
 * needs are in (retry_pending).
 */
static bool demand_segment(HandoffEarlyStart *es, uint32_t k)
{
    PendingSegment p = { .segment = k };

    if (apply_segment(es, k, true, &p.missing)) {
        return true;
    }
    if (!es->waited[k]) {
        es->waited[k] = 1;
        g_array_append_val(es->pending, p);
    }
    return false;
}

/* The segment that carries chunk @index of @region, if one does. */
static bool carried_in(HandoffEarlyStart *es, uint32_t region,
                       uint64_t index, uint32_t *segment)
{
    int place;
    int rc = handoff_segment_table_locate(es->load.table, region, index,
                                          &place, segment);

    if (rc < 0) {
        early_engine_fatal(rc);
    }
    return place == HANDOFF_CHUNK_REMOTE;
}

/*
 * Once @page's segment is applied: placed, or the segment the index
 * names did not carry it (a crafted overlay: the decoder would find it
 * only at the end, with the accessor waiting until then). A page present
 * already when it faulted is the kernel's second message for one access;
 * the page says which (UFFDIO_ZEROPAGE finds it there: EEXIST). Placing
 * zeros means it was missing though applied or never emptied, so
 * something discarded it behind us: fatal, the guest would run on zeros.
 */
static void check_placed(HandoffEarlyStart *es, EarlyRegion *r,
                         uint64_t page)
{
    if (!page_present(es, page)) {
        early_fatal("chunk %" PRIu64 " of region %u missing though "
                    "never emptied or its segment applied",
                    (page - (uintptr_t)r->host) >> 12, r->region);
    }
}

/* A fault at @addr: its chunk's segment applied now, or once it is in. */
static void serve_fault(HandoffEarlyStart *es, uint64_t addr)
{
    uint64_t page = addr & ~(uint64_t)(HANDOFF_CHUNK_SIZE - 1);
    uint32_t segment;
    size_t i;

    for (i = 0; i < es->n_regions; i++) {
        EarlyRegion *r = &es->regions[i];
        uint64_t host = (uintptr_t)r->host;

        if (!r->host || page < host || page - host >= r->size) {
            continue;
        }
        qatomic_inc(&es->faults);
        trace_handoff_early_start_fault(r->region, (page - host) >> 12);
        if (carried_in(es, r->region, (page - host) / HANDOFF_CHUNK_SIZE,
                       &segment) && !es->applied[segment] &&
            !demand_segment(es, segment)) {
            PendingFault f = { .region = r, .page = page,
                               .segment = segment,
                               .since = qemu_clock_get_ns(
                                   QEMU_CLOCK_REALTIME) };
            guint j;

            /* One per waiting thread: the kernel's repeats are dropped. */
            for (j = 0; j < es->pending_faults->len; j++) {
                if (g_array_index(es->pending_faults, PendingFault,
                                  j).page == page) {
                    return;
                }
            }
            g_array_append_val(es->pending_faults, f);
            return;
        }
        check_placed(es, r, page);
        return;
    }
    early_fatal("fault at %" PRIx64 " outside every registered region",
                addr);
}

static void serve_faults(HandoffEarlyStart *es)
{
    struct uffd_msg msgs[16];
    int n, i;

    while ((n = uffd_read_events(es->uffd, msgs, ARRAY_SIZE(msgs))) > 0) {
        for (i = 0; i < n; i++) {
            if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
                serve_fault(es, msgs[i].arg.pagefault.address);
            }
        }
    }
    if (n < 0) {
        early_fatal("cannot read the userfaultfd");
    }
}

/* Disk chunks a request waits for: their segments, now. */
static void serve_disk_demand(HandoffEarlyStart *es)
{
    g_autoptr(GArray) demand = NULL;
    uint64_t ignored;
    uint32_t segment;
    guint i;

    if (read(es->wake_fd, &ignored, sizeof(ignored)) < 0 && errno != EAGAIN) {
        early_fatal("eventfd: %s", strerror(errno));
    }
    qemu_mutex_lock(&es->demand_lock);
    demand = es->demand;
    es->demand = g_array_new(false, false, sizeof(EarlyDemand));
    qemu_mutex_unlock(&es->demand_lock);
    for (i = 0; i < demand->len; i++) {
        EarlyDemand *d = &g_array_index(demand, EarlyDemand, i);

        if (carried_in(es, d->region, d->chunk, &segment) &&
            !es->applied[segment]) {
            qatomic_inc(&es->disk_demands);
            demand_segment(es, segment);
        }
    }
}

/* The filter's callback, its lock held: note the chunk, wake the thread. */
static void demand_chunk(uint64_t chunk, void *opaque)
{
    EarlyRegion *r = opaque;
    HandoffEarlyStart *es = r->es;
    EarlyDemand d = { .region = r->region, .chunk = chunk };
    uint64_t one = 1;

    /* Under the filter's lock, this region's only caller. */
    if (chunk >= r->size / HANDOFF_CHUNK_SIZE ||
        test_and_set_bit(chunk, r->demanded)) {
        return;
    }
    qemu_mutex_lock(&es->demand_lock);
    g_array_append_val(es->demand, d);
    qemu_mutex_unlock(&es->demand_lock);
    if (write(es->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        error_report("handoff: early start: eventfd: %s", strerror(errno));
    }
}

/*
 * The faults whose segments are applied now, by whichever path (asked
 * for, or reached in the background): checked placed, their waits
 * counted.
 */
static void retire_pending_faults(HandoffEarlyStart *es)
{
    guint i = 0;

    while (i < es->pending_faults->len) {
        PendingFault *f = &g_array_index(es->pending_faults, PendingFault, i);

        if (es->applied[f->segment]) {
            int64_t waited = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) -
                             f->since;

            check_placed(es, f->region, f->page);
            /* What an accessor (a vCPU, mostly) was blocked for. */
            qatomic_set(&es->fault_wait_ns, es->fault_wait_ns + waited);
            if (waited > es->fault_wait_max_ns) {
                qatomic_set(&es->fault_wait_max_ns, waited);
            }
            g_array_remove_index_fast(es->pending_faults, i);
        } else {
            i++;
        }
    }
}

/* What waited for segments not in yet, served as far as they are now. */
static void retry_pending(HandoffEarlyStart *es)
{
    guint i = 0;

    while (i < es->pending->len) {
        PendingSegment *p = &g_array_index(es->pending, PendingSegment, i);
        uint32_t k = p->segment;

        /*
         * Its closure walked again only once the last segment it lacked
         * is in: the feed was asked for the others first, so they are
         * likely in by then, and a HAVE for something else costs nothing
         * here (a crafted table may chain 2^22 segments).
         */
        if (!es->applied[k] && !es->arrived[p->missing]) {
            i++;
        } else if (es->applied[k] || apply_segment(es, k, true,
                                                    &p->missing)) {
            es->waited[k] = 0;
            g_array_remove_index_fast(es->pending, i);
        } else {
            i++;
        }
    }
    retire_pending_faults(es);
}

/* What the feed's sender said: segments in the file. */
static void read_feed(HandoffEarlyStart *es)
{
    Error *err = NULL;

    if (!es->feed) {
        return;
    }
    if (!handoff_early_feed_read(es->feed, &err) ||
        !handoff_early_feed_flush(es->feed, &err)) {
        early_fatal("%s", error_get_pretty(err));
    }
    if (es->pending->len) {
        retry_pending(es);
    }
}

/*
 * With a feed, the file was not whole when the load began: its digest,
 * which covers the description and the device state too, is checked now
 * that it is.
 */
static void check_digest(HandoffEarlyStart *es)
{
    const HandoffEarlyStartOptions *o = &es->load.options;
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    uint8_t digest[32];
    gsize digest_len = sizeof(digest);
    uint64_t done = 0;

    while (done < o->digest_bytes) {
        ssize_t n = pread(es->load.fd, buf,
                          MIN(o->digest_bytes - done, 1 << 20),
                          o->digest_from + done);

        if (n <= 0) {
            early_fatal("cannot read the overlay back to check its digest: "
                        "%s", n < 0 ? strerror(errno) : "it ends early");
        }
        g_checksum_update(sum, buf, n);
        done += n;
    }
    g_checksum_get_digest(sum, digest, &digest_len);
    if (memcmp(digest, o->digest, sizeof(digest))) {
        early_fatal("the overlay, whole now, differs from its header's "
                    "SHA-256");
    }
}

/*
 * The next segment in file order may go when the backlog has room and the
 * rate (a test's and a benchmark's knob: what a link would allow) says
 * so; else how long to wait for it, in ms (at most 100: events wake the
 * thread sooner).
 */
static int background_wait_ms(HandoffEarlyStart *es)
{
    int64_t now;

    if (es->backlog_bytes >= BACKLOG_MAX) {
        return 1;
    }
    if (!es->load.options.rate) {
        return 0;
    }
    now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    return now >= es->next_background_ns ? 0 :
           MIN((es->next_background_ns - now) / SCALE_MS + 1, 100);
}

static void pace(HandoffEarlyStart *es, uint32_t k)
{
    uint32_t len = 0;

    if (es->load.options.rate &&
        handoff_segment_table_entry(es->load.table, k, NULL, &len, NULL,
                                    NULL, 0, NULL) == 0) {
        es->next_background_ns = MAX(es->next_background_ns,
                                     qemu_clock_get_ns(QEMU_CLOCK_REALTIME)) +
                                 (int64_t)len * NANOSECONDS_PER_SECOND /
                                 es->load.options.rate;
    }
}

static void wait_events(HandoffEarlyStart *es, int timeout_ms)
{
    struct pollfd fds[3] = {
        { .fd = es->uffd, .events = POLLIN },
        { .fd = es->wake_fd, .events = POLLIN },
        { .fd = es->feed ? handoff_early_feed_fd(es->feed) : -1,
          .events = POLLIN | (es->feed && handoff_early_feed_pending(es->feed)
                              ? POLLOUT : 0) },
    };

    if (poll(fds, 3, timeout_ms) < 0 && errno != EINTR) {
        early_fatal("poll: %s", strerror(errno));
    }
}

static void *early_start_thread(void *opaque)
{
    HandoffEarlyStart *es = opaque;
    uint32_t next = 0, missing;

    rcu_register_thread();
    while (es->applied_count < es->count) {
        int wait;

        serve_faults(es);
        serve_disk_demand(es);
        read_feed(es);
        backlog_submit(es);
        retire_pending_faults(es);
        while (next < es->count && es->applied[next]) {
            next++;
        }
        if (next == es->count) {
            break;              /* the last ones were demanded */
        }
        if (!es->arrived[next]) {
            wait_events(es, 100);
            continue;
        }
        wait = background_wait_ms(es);
        if (wait == 0) {
            pace(es, next);
            /* Its dependencies are earlier, so applied: it is all in. */
            apply_segment(es, next, false, &missing);
            continue;
        }
        wait_events(es, wait);
    }
    retire_pending_faults(es);          /* the last ones applied */
    {
        int rc = handoff_decoder_finish(es->load.dec);

        if (rc < 0) {
            early_engine_fatal(rc);
        }
    }
    if (es->feed) {
        check_digest(es);
    }
    while (es->backlog->len) {
        serve_faults(es);
        serve_disk_demand(es);          /* reads the eventfd: no spin */
        backlog_submit(es);
        if (es->backlog->len) {
            wait_events(es, 1);
        }
    }
    /* Every carried page is placed: unregistering wakes nobody onto zeros. */
    serve_faults(es);
    for (size_t i = 0; i < es->n_regions; i++) {
        EarlyRegion *r = &es->regions[i];

        if (r->registered &&
            uffd_unregister_memory(es->uffd, r->host, r->size)) {
            early_fatal("cannot unregister region %u: %s", r->region,
                        strerror(errno));
        }
        r->registered = false;
    }
    qatomic_set(&es->ended_ns, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    trace_handoff_early_start_applied(es->count, es->faults, es->demanded);
    timer_mod(es->finish_timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME));
    rcu_unregister_thread();
    return NULL;
}

/* --- the end, in the main loop ------------------------------------------- */

/*
 * What the start took, given back (main thread): the filters, THP, the
 * fds, the migration blocker, discards, the table and the overlay.
 */
static void early_start_release(HandoffEarlyStart *es)
{
    size_t i;

    /*
     * First: a refused start's RAM is still registered and emptied, and
     * removing a filter drains, which runs the main loop; with the uffd
     * closed, an access there finds a zero page instead of waiting for a
     * thread that never ran (the VM does not run after a refused start).
     */
    if (es->uffd >= 0) {
        close(es->uffd);
        es->uffd = -1;
    }
    for (i = 0; i < es->n_regions; i++) {
        EarlyRegion *r = &es->regions[i];

        if (r->filter) {
            handoff_early_remove(r->filter);
            r->filter = NULL;
            r->early = NULL;
        }
        if (r->no_hugepages) {
            qemu_madvise(r->host, r->size, QEMU_MADV_HUGEPAGE);
            r->no_hugepages = false;
        }
        g_free(r->demanded);
        r->demanded = NULL;
    }
    if (es->wake_fd >= 0) {
        close(es->wake_fd);
        es->wake_fd = -1;
    }
    if (es->blocker) {
        migrate_del_blocker(es->blocker);
        error_free(es->blocker);
        es->blocker = NULL;
    }
    if (es->discards_disabled) {
        ram_block_discard_disable(false);
        es->discards_disabled = false;
    }
    if (es->shutdown.notify) {
        notifier_remove(&es->shutdown);
        es->shutdown.notify = NULL;
    }
    if (es->exit.notify) {
        qemu_remove_exit_notifier(&es->exit);
        es->exit.notify = NULL;
    }
    if (es->feed) {
        es->feed_arrived = handoff_early_feed_arrived(es->feed);
        es->feed_wanted = handoff_early_feed_wanted(es->feed);
        handoff_early_feed_free(es->feed);
        es->feed = NULL;
    }
    handoff_segment_table_free(es->load.table);
    es->load.table = NULL;
    if (es->load.fd >= 0) {
        close(es->load.fd);
        es->load.fd = -1;
    }
}

/*
 * Every segment applied: once the filters have written their last
 * placements, they go, and with them what the load kept. The counters
 * stay for query-handoff-early-start.
 */
static void early_start_finish(void *opaque)
{
    HandoffEarlyStart *es = opaque;
    size_t i;

    for (i = 0; i < es->n_regions; i++) {
        HandoffEarlyStats st;

        if (!es->regions[i].early) {
            continue;
        }
        check_disk(&es->regions[i]);
        handoff_early_stats(es->regions[i].early, &st);
        if (st.absent || st.queued_bytes) {
            timer_mod(es->finish_timer,         /* after the next writes */
                      qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 10);
            return;
        }
    }
    qemu_thread_join(&es->thread);
    early_start_release(es);
    es->load.release(es->load.opaque);
    es->load.release = NULL;
    es->load.dec = NULL;
    es->completed = true;
    trace_handoff_early_start_completed();
}

/*
 * QEMU stopping (quit, the guest's poweroff) before every segment is in:
 * the disks' overlays lack what was not placed, and the block layer's
 * teardown would meet the filters and this thread. Refused as loudly as
 * can be: the process ends here, the overlays named incomplete.
 */
static void early_start_refuse_exit(HandoffEarlyStart *es)
{
    if (!es->completed) {
        error_report("handoff: early start: QEMU stops with %u of %u "
                     "segments applied: the VM's disk overlays are "
                     "incomplete and must not be used",
                     qatomic_read(&es->applied_count), es->count);
        _exit(EXIT_FAILURE);
    }
}

/*
 * A shutdown that pauses instead (-no-shutdown, as libvirt starts QEMU,
 * or -action shutdown=pause) lets the segments go on arriving; quit and
 * signals set the action back to poweroff first.
 */
static void early_start_shutdown(Notifier *n, void *data)
{
    if (shutdown_action != SHUTDOWN_ACTION_PAUSE) {
        early_start_refuse_exit(container_of(n, HandoffEarlyStart,
                                             shutdown));
    }
}

/* exit() without a shutdown: a load that failed after the start. */
static void early_start_exit(Notifier *n, void *data)
{
    early_start_refuse_exit(container_of(n, HandoffEarlyStart, exit));
}

/* --- the start ------------------------------------------------------------ */

/* A run of consecutive carried chunks; false stops the walk. */
typedef bool CarriedRunFn(uint64_t first, uint64_t count, void *opaque,
                          Error **errp);

/* Calls @fn for each run of chunks of @region (@size bytes) carried. */
static bool for_each_carried_run(HandoffEarlyStart *es, uint32_t region,
                                 uint64_t size, CarriedRunFn *fn,
                                 void *opaque, Error **errp)
{
    uint64_t chunks = size / HANDOFF_CHUNK_SIZE, i, run = 0;
    uint32_t segment;

    for (i = 0; i <= chunks; i++) {
        if (i < chunks && carried_in(es, region, i, &segment)) {
            run++;
            continue;
        }
        if (run && !fn(i - run, run, opaque, errp)) {
            return false;
        }
        run = 0;
    }
    return true;
}

typedef struct EmptyRun {
    RAMBlock *rb;
    uint64_t block_offset;      /* of the region in @rb */
} EmptyRun;

static bool empty_run(uint64_t first, uint64_t count, void *opaque,
                      Error **errp)
{
    EmptyRun *e = opaque;

    if (ram_block_discard_range(e->rb, e->block_offset +
                                       first * HANDOFF_CHUNK_SIZE,
                                count * HANDOFF_CHUNK_SIZE)) {
        error_setg(errp, "cannot empty chunks of RAM block '%s'",
                   qemu_ram_get_idstr(e->rb));
        return false;
    }
    return true;
}

/*
 * Empties the carried chunks of @r, a run at a time, once it is
 * registered: their first access faults.
 */
static bool empty_carried(HandoffEarlyStart *es, EarlyRegion *r,
                          RAMBlock *rb, Error **errp)
{
    EmptyRun e = {
        .rb = rb,
        .block_offset = r->host - (uint8_t *)qemu_ram_get_host_addr(rb),
    };

    return for_each_carried_run(es, r->region, r->size, empty_run, &e,
                                errp);
}

static bool arm_memory(HandoffEarlyStart *es, EarlyRegion *r, Error **errp)
{
    const uint64_t needed = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_WAKE) |
                            (1ULL << _UFFDIO_ZEROPAGE);
    ram_addr_t offset;
    RAMBlock *rb = qemu_ram_block_from_host(r->host, false, &offset);
    uint64_t ioctls;

    if (!rb || qemu_ram_pagesize(rb) != HANDOFF_CHUNK_SIZE ||
        qemu_ram_is_shared(rb) || qemu_ram_get_fd(rb) >= 0) {
        error_setg(errp, "region %u: early start places 4 KiB pages of "
                   "private anonymous RAM only", r->region);
        return false;
    }
    qemu_madvise(r->host, r->size, QEMU_MADV_NOHUGEPAGE);
    r->no_hugepages = true;
    if (uffd_register_memory(es->uffd, r->host, r->size,
                             UFFDIO_REGISTER_MODE_MISSING, &ioctls)) {
        error_setg_errno(errp, errno, "userfaultfd: cannot register RAM "
                         "block '%s'", qemu_ram_get_idstr(rb));
        return false;
    }
    r->registered = true;
    if ((ioctls & needed) != needed) {
        error_setg(errp, "userfaultfd: RAM block '%s' cannot be filled page "
                   "by page", qemu_ram_get_idstr(rb));
        return false;
    }
    return empty_carried(es, r, rb, errp);
}

static bool mark_absent_run(uint64_t first, uint64_t count, void *opaque,
                            Error **errp)
{
    EarlyRegion *r = opaque;

    return handoff_early_mark_absent(r->early, first, count, errp);
}

/* The filter over @d, its carried chunks absent. */
static bool arm_disk(HandoffEarlyStart *es, EarlyRegion *r, HandoffDisk *d,
                     Error **errp)
{
    g_autofree char *name = g_strdup_printf("handoff-early-start-%u",
                                            r->region);

    r->filter = handoff_early_insert(blk_bs(d->blk), name, false, errp);
    if (!r->filter) {
        error_prepend(errp, "disk '%s': ", d->region_name);
        return false;
    }
    r->early = handoff_early_of(r->filter, &error_abort);
    r->demanded = bitmap_new(r->size / HANDOFF_CHUNK_SIZE);
    if (!for_each_carried_run(es, r->region, r->size, mark_absent_run, r,
                              errp)) {
        return false;
    }
    handoff_early_set_demand(r->early, demand_chunk, r);
    return true;
}

/* What could fill or empty RAM behind this file, held off meanwhile. */
static bool hold_off(HandoffEarlyStart *es, Error **errp)
{
    /*
     * Discards disabled already means a device pins guest RAM (VFIO):
     * emptying a chunk would leave its DMA mapping on the old page.
     */
    if (ram_block_discard_is_disabled()) {
        error_setg(errp, "a device pins guest RAM (discards are disabled): "
                   "early start cannot empty the chunks still to come");
        return false;
    }
    error_setg(&es->blocker, "an early-started VM's overlay is still being "
               "applied");
    if (migrate_add_blocker(es->blocker, errp) < 0) {
        error_free(es->blocker);
        es->blocker = NULL;
        return false;
    }
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "a device needs RAM discards (virtio-mem): early "
                   "start cannot hold them off");
        return false;
    }
    es->discards_disabled = true;
    es->uffd = handoff_uffd_create("early start", errp);
    if (es->uffd < 0) {
        return false;
    }
    es->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (es->wake_fd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        return false;
    }
    return true;
}

static bool stop_at_run(uint64_t first, uint64_t count, void *opaque,
                        Error **errp)
{
    return false;
}

/* Whether any chunk of @region, one this VM cannot hold back, is carried. */
static bool carries_any(HandoffEarlyStart *es, uint32_t region, uint64_t size)
{
    return !for_each_carried_run(es, region, size, stop_at_run, NULL, NULL);
}

/*
 * Disks first: inserting a filter may drain, and so run the main loop,
 * which must find no emptied RAM while no thread serves its faults.
 * Then RAM, with nothing in between that yields, then the thread.
 */
static bool arm_regions(HandoffEarlyStart *es, Error **errp)
{
    bool memory;
    size_t i;

    es->regions = g_new0(EarlyRegion, es->load.n_regions);
    for (memory = false; ; memory = true) {
        for (i = 0; i < es->load.n_regions; i++) {
            EarlyRegion *r = &es->regions[es->n_regions];
            HandoffDisk *d = NULL;

            if (!!es->load.host[i] != memory) {
                continue;
            }
            r->es = es;
            r->region = i;
            r->host = es->load.host[i];
            r->size = es->load.size[i];
            d = r->host ? NULL : handoff_disks_find(es->load.disks, i);
            if (!r->host && !d) {
                if (carries_any(es, i, r->size)) {
                    error_setg(errp, "region %zu carries chunks this VM "
                               "has no disk for", i);
                    return false;
                }
                continue;
            }
            es->n_regions++;
            if (r->host ? !arm_memory(es, r, errp)
                        : !arm_disk(es, r, d, errp)) {
                return false;
            }
        }
        if (memory) {
            return true;
        }
    }
}

bool handoff_early_start_begin(const HandoffEarlyStartLoad *load,
                               HandoffEarlyStart **out, Error **errp)
{
    HandoffEarlyStart *es = g_new0(HandoffEarlyStart, 1);

    assert(!early_start);
    es->load = *load;
    es->uffd = es->wake_fd = -1;
    es->count = handoff_segment_table_count(load->table);
    es->applied = g_new0(uint8_t, es->count);
    es->wanted = g_new0(uint8_t, es->count);
    es->arrived = g_new0(uint8_t, es->count);
    es->waited = g_new0(uint8_t, es->count);
    es->pending = g_array_new(false, false, sizeof(PendingSegment));
    es->pending_faults = g_array_new(false, false, sizeof(PendingFault));
    es->buf = g_malloc(HANDOFF_SEGMENT_MAX_BYTES);
    es->t0 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    qemu_mutex_init(&es->demand_lock);
    es->demand = g_array_new(false, false, sizeof(EarlyDemand));
    es->backlog = g_array_new(false, false, sizeof(HandoffEarlyChunks));
    es->backlog_region = g_array_new(false, false, sizeof(uint32_t));
    es->finish_timer = timer_new_ms(QEMU_CLOCK_REALTIME, early_start_finish,
                                    es);
    /* Before arming: inserting a filter may run the main loop (a quit). */
    es->shutdown.notify = early_start_shutdown;
    qemu_register_shutdown_notifier(&es->shutdown);
    es->exit.notify = early_start_exit;
    qemu_add_exit_notifier(&es->exit);
    if (load->options.feed_fd < 0) {
        memset(es->arrived, 1, es->count);
    } else {
        es->fed = true;
        es->feed = handoff_early_feed_new(load->options.feed_fd, load->table,
                                          load->start, es->arrived, errp);
    }
    if ((es->fed && !es->feed) || !hold_off(es, errp) ||
        !arm_regions(es, errp)) {
        /*
         * Nothing has run on this RAM: the load fails and the VM never
         * starts, so the emptied chunks need no bytes back. The caller
         * keeps the table, the overlay and its own state.
         */
        es->load.table = NULL;
        es->load.fd = -1;
        early_start_release(es);
        timer_free(es->finish_timer);
        qemu_mutex_destroy(&es->demand_lock);
        g_array_free(es->demand, true);
        g_array_free(es->backlog, true);
        g_array_free(es->backlog_region, true);
        g_free(es->applied);
        g_free(es->wanted);
        g_free(es->arrived);
        g_free(es->waited);
        g_array_free(es->pending, true);
        g_array_free(es->pending_faults, true);
        g_free(es->buf);
        g_free(es->regions);
        g_free(es);
        return false;
    }
    trace_handoff_early_start_begin(es->count, es->load.options.rate);
    /* Published before the thread runs: the decoder's writer reads it. */
    *out = early_start = es;
    qemu_thread_create(&es->thread, "handoff-early", early_start_thread, es,
                       QEMU_THREAD_JOINABLE);
    return true;
}

/* --- QMP ------------------------------------------------------------------ */

HandoffEarlyStartInfo *qmp_query_handoff_early_start(Error **errp)
{
    HandoffEarlyStart *es = early_start;
    HandoffEarlyStartInfo *info;
    int64_t ended;

    if (!es) {
        error_setg(errp, "no early start in this QEMU (-handoff "
                   "overlay=FILE,early-start=on starts one)");
        return NULL;
    }
    info = g_new0(HandoffEarlyStartInfo, 1);
    ended = qatomic_read(&es->ended_ns);
    info->status = es->completed ? HANDOFF_EARLY_START_STATUS_COMPLETED :
                   HANDOFF_EARLY_START_STATUS_ACTIVE;
    info->segments = es->count;
    info->segments_applied = qatomic_read(&es->applied_count);
    info->bytes = qatomic_read(&es->bytes);
    info->demanded = qatomic_read(&es->demanded);
    info->faults = qatomic_read(&es->faults);
    info->disk_demands = qatomic_read(&es->disk_demands);
    info->fault_wait_ms = qatomic_read(&es->fault_wait_ns) / SCALE_MS;
    info->fault_wait_max_ms = qatomic_read(&es->fault_wait_max_ns) /
                              SCALE_MS;
    info->has_applied_ms = ended != 0;
    info->applied_ms = ended ? (ended - es->t0) / SCALE_MS : 0;
    if (es->fed) {
        /* The thread's counts, read as they go; kept once it is gone. */
        info->has_feed_arrived = info->has_feed_wanted = true;
        info->feed_arrived = es->feed ? handoff_early_feed_arrived(es->feed)
                                      : es->feed_arrived;
        info->feed_wanted = es->feed ? handoff_early_feed_wanted(es->feed)
                                     : es->feed_wanted;
    }
    return info;
}
