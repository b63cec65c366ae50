/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Working-set recording (early start, docs/design/early-start.md §2.5):
 * which 4 KiB chunks of memory a VM touches first, in the order it
 * touches them, so that an early-start overlay can send them first.
 *
 * handoff-record-start, on a paused VM (a launch from its overlay under
 * -S), moves each of the base's RAM blocks aside into a private shadow,
 * empties the block and registers it with userfaultfd (MISSING mode). The
 * first access to a page by anything (a vCPU under TCG or KVM, device
 * emulation, the kernel copying disk reads into guest memory) faults; the
 * fault thread logs the page and places the shadow's bytes with
 * UFFDIO_COPY, which wakes the accessor. handoff-record-stop places every
 * page not touched, unregisters, and writes the log.
 *
 * Why a thread of its own and not postcopy's fault thread: postcopy's
 * asks a migration source for pages over the return path, and here the
 * pages are in this process. The placement rules are postcopy's: whole
 * host pages, atomically (UFFDIO_COPY), THP off while registered
 * (postcopy-ram.c's nhp_range and cleanup_range), 4 KiB pages only.
 *
 * The fault thread never takes the BQL: a vCPU or the main thread that
 * faults while holding it waits only for this thread.
 *
 * Only this thread places pages, so a page found present (EEXIST) when
 * placed first, or missing again after its placement, means something
 * filled or discarded RAM behind the recording: that is fatal, never
 * skipped, since the guest
 * would go on with a page that is not its own. What could do it is shut
 * out for the recording's length: migrations and snapshots (a blocker),
 * the balloon and virtio-mem (discards disabled); RAM shared with another
 * process or backed by a file is refused.
 */
#include "qemu/osdep.h"
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include "exec/exec-all.h"
#include "exec/ramblock.h"
#include "migration.h"
#include "ram.h"
#include "migration/blocker.h"
#include "migration/handoff.h"
#include "migration/misc.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qemu/bitmap.h"
#include "qemu/error-report.h"
#include "qemu/madvise.h"
#include "qemu/main-loop.h"
#include "qemu/rcu.h"
#include "qemu/thread.h"
#include "qemu/userfaultfd.h"
#include "sysemu/runstate.h"
#include "sysemu/tcg.h"
#include "handoff-internal.h"
#include "handoff-record.h"
#include "trace.h"

typedef struct RecordBlock {
    RAMBlock *rb;
    uint8_t *host;
    uint64_t len;
    uint32_t region;            /* in the base's geometry */
    uint64_t logged_pages;      /* the base region's: pages beyond are
                                   placed, not logged */
    bool registered;
    uint8_t *shadow;            /* the block's content at start */
    unsigned long *placed;      /* pages given their bytes once */
} RecordBlock;

typedef struct HandoffRecorder {
    char *path;
    int uffd;
    int quit_fd;                /* eventfd: stop asked */
    QemuThread thread;
    RecordBlock *blocks;
    size_t n_blocks;
    HandoffRecordEntry *order;  /* fault thread appends, main reads after
                                   join */
    uint64_t n_order;
    uint64_t capacity;          /* pages of all blocks: one entry each */
    int64_t t0;
    Error *blocker;             /* migrations and snapshots wait */
    bool discards_disabled;
    HandoffRecordDisk *disk;    /* the disk's first touches */
    HandoffBaseStore *store;    /* names the regions when written */
    char *part;                 /* the log, written here, then renamed */
    int part_fd;
} HandoffRecorder;

static HandoffRecorder *recorder;

/* --- the fault thread -------------------------------------------------- */

static RecordBlock *block_of(HandoffRecorder *r, uint64_t addr)
{
    size_t i;

    for (i = 0; i < r->n_blocks; i++) {
        uint64_t host = (uintptr_t)r->blocks[i].host;

        if (addr >= host && addr - host < r->blocks[i].len) {
            return &r->blocks[i];
        }
    }
    return NULL;
}

/* Nothing can go on when a page cannot be placed: no notifiers either. */
static void G_GNUC_NORETURN G_GNUC_PRINTF(2, 3)
record_fatal(RecordBlock *b, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("handoff: recording, RAM block '%s': %s",
                 qemu_ram_get_idstr(b->rb), msg);
    _exit(EXIT_FAILURE);
}

/* Gives @count pages from @page on their shadow bytes, atomically. */
static void copy_pages(HandoffRecorder *r, RecordBlock *b, uint64_t page,
                       uint64_t count)
{
    uint64_t off = page * HANDOFF_CHUNK_SIZE;

    if (uffd_copy_page(r->uffd, b->host + off, b->shadow + off,
                       count * HANDOFF_CHUNK_SIZE, false)) {
        record_fatal(b, "cannot place page %" PRIu64 "%s: %s", page,
                     errno == EEXIST ? " (filled behind the recording)" : "",
                     strerror(errno));
    }
}

/*
 * A fault on a page placed already. Mostly a second message for one
 * access: the kernel queues it before it sees the page present, and this
 * thread may read it after the placement (postcopy skips these too,
 * migration.c). The placement says which: EEXIST, the page is there;
 * success, it was missing, so something discarded it behind the
 * recording, and its bytes now are stale: fatal.
 */
static void check_placed_page(HandoffRecorder *r, RecordBlock *b,
                              uint64_t page)
{
    uint64_t off = page * HANDOFF_CHUNK_SIZE;
    struct uffdio_copy c = {
        .dst = (uintptr_t)b->host + off,
        .src = (uintptr_t)b->shadow + off,
        .len = HANDOFF_CHUNK_SIZE,
    };

    if (ioctl(r->uffd, UFFDIO_COPY, &c) && errno == EEXIST) {
        return;
    }
    record_fatal(b, "page %" PRIu64 " missing again after it was placed "
                 "(discarded behind the recording)", page);
}

static void place_faulted_page(HandoffRecorder *r, RecordBlock *b,
                               uint64_t page)
{
    if (test_and_set_bit(page, b->placed)) {
        check_placed_page(r, b, page);
        return;
    }
    if (page < b->logged_pages) {
        r->order[r->n_order++] = (HandoffRecordEntry) {
            .region = b->region,
            .chunk = page,
            .ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - r->t0,
        };
        trace_handoff_record_fault(b->region, page);
    }
    copy_pages(r, b, page, 1);
}

static void serve_faults(HandoffRecorder *r)
{
    struct uffd_msg msgs[16];
    int n, i;

    while ((n = uffd_read_events(r->uffd, msgs, ARRAY_SIZE(msgs))) > 0) {
        for (i = 0; i < n; i++) {
            uint64_t addr = msgs[i].arg.pagefault.address;
            RecordBlock *b;

            if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
                continue;
            }
            b = block_of(r, addr);
            if (!b) {
                error_report("handoff: recording: fault at %" PRIx64
                             " outside every registered block", addr);
                _exit(EXIT_FAILURE);
            }
            place_faulted_page(r, b, (addr - (uintptr_t)b->host) /
                                     HANDOFF_CHUNK_SIZE);
        }
    }
    if (n < 0) {
        _exit(EXIT_FAILURE);        /* uffd_read_events said why */
    }
}

/*
 * Every page not touched gets its bytes, a run per ioctl, then the blocks
 * are plain RAM. Faults that arrive meanwhile wait: their pages are in
 * some run, and its UFFDIO_COPY wakes them.
 */
static void finish_blocks(HandoffRecorder *r)
{
    size_t i;

    for (i = 0; i < r->n_blocks; i++) {
        RecordBlock *b = &r->blocks[i];
        uint64_t pages = b->len / HANDOFF_CHUNK_SIZE, p, end;

        for (p = find_first_zero_bit(b->placed, pages); p < pages;
             p = find_next_zero_bit(b->placed, pages, end)) {
            end = find_next_bit(b->placed, pages, p);
            bitmap_set(b->placed, p, end - p);
            copy_pages(r, b, p, end - p);
        }
        if (uffd_unregister_memory(r->uffd, b->host, b->len)) {
            record_fatal(b, "cannot unregister: %s", strerror(errno));
        }
        qemu_madvise(b->host, b->len, QEMU_MADV_HUGEPAGE);
    }
}

static void *record_thread(void *opaque)
{
    HandoffRecorder *r = opaque;
    struct pollfd fds[2] = {
        { .fd = r->uffd, .events = POLLIN },
        { .fd = r->quit_fd, .events = POLLIN },
    };

    rcu_register_thread();
    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) {
            error_report("handoff: recording: poll: %s", strerror(errno));
            _exit(EXIT_FAILURE);
        }
        if (fds[0].revents & POLLIN) {
            serve_faults(r);
        }
        if (fds[1].revents & POLLIN) {
            break;
        }
    }
    finish_blocks(r);
    rcu_unregister_thread();
    return NULL;
}

/* --- start and stop ---------------------------------------------------- */

static void recorder_free(HandoffRecorder *r)
{
    size_t i;

    if (!r) {
        return;
    }
    for (i = 0; i < r->n_blocks; i++) {
        if (r->blocks[i].shadow) {
            munmap(r->blocks[i].shadow, r->blocks[i].len);
        }
        g_free(r->blocks[i].placed);
    }
    if (r->uffd >= 0) {
        close(r->uffd);
    }
    if (r->quit_fd >= 0) {
        close(r->quit_fd);
    }
    if (r->blocker) {
        migrate_del_blocker(r->blocker);
        error_free(r->blocker);
    }
    if (r->discards_disabled) {
        ram_block_discard_disable(false);
    }
    if (r->disk) {
        handoff_record_disk_stop(r->disk, 0, NULL);
    }
    if (r->part_fd >= 0) {
        close(r->part_fd);
        unlink(r->part);
    }
    handoff_base_store_free(r->store);
    g_free(r->part);
    g_free(r->blocks);
    g_free(r->order);
    g_free(r->path);
    g_free(r);
}

static bool open_uffd(HandoffRecorder *r, Error **errp)
{
    r->uffd = handoff_uffd_create("a recording QEMU", errp);
    if (r->uffd < 0) {
        return false;
    }
    r->quit_fd = eventfd(0, EFD_CLOEXEC);
    if (r->quit_fd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        return false;
    }
    return true;
}

/*
 * The base's RAM blocks this VM has, by name: the chunks an overlay
 * carries are numbered in the base's regions.
 */
static bool collect_blocks(HandoffRecorder *r, HandoffBaseStore *store,
                           Error **errp)
{
    RAMBlock *rb;
    size_t i;

    r->blocks = g_new0(RecordBlock, store->n_memory);
    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH_MIGRATABLE(rb) {
        for (i = 0; i < store->n_memory; i++) {
            RecordBlock *b = &r->blocks[r->n_blocks];

            if (strcmp(store->memory[i].name, qemu_ram_get_idstr(rb))) {
                continue;
            }
            if (qemu_ram_pagesize(rb) != HANDOFF_CHUNK_SIZE) {
                error_setg(errp, "RAM block '%s' has %zu-byte pages: "
                           "recording places 4 KiB pages only",
                           qemu_ram_get_idstr(rb), qemu_ram_pagesize(rb));
                return false;
            }
            /*
             * Emptying a block punches a hole in its file (even a private
             * mapping's, physmem.c), and another process's access to
             * shared memory fills pages behind the recording.
             */
            if (qemu_ram_is_shared(rb) || qemu_ram_get_fd(rb) >= 0) {
                error_setg(errp, "RAM block '%s' is backed by a file or "
                           "shared memory: recording moves private "
                           "anonymous RAM only", qemu_ram_get_idstr(rb));
                return false;
            }
            b->rb = rb;
            b->host = qemu_ram_get_host_addr(rb);
            b->len = qemu_ram_get_used_length(rb);
            b->region = store->memory[i].region;
            b->logged_pages = MIN(b->len, store->memory[i].size) /
                              HANDOFF_CHUNK_SIZE;
            r->capacity += b->len / HANDOFF_CHUNK_SIZE;
            r->n_blocks++;
        }
    }
    if (!r->n_blocks) {
        error_setg(errp, "this VM has none of the base's RAM blocks");
        return false;
    }
    return true;
}

/*
 * Shadow, register, then empty: the VM is paused and nothing else may use
 * RAM (see the top), and an access that came anyway would fault rather
 * than find a fresh zero page the recording never placed.
 */
static bool arm_block(HandoffRecorder *r, RecordBlock *b, Error **errp)
{
    const uint64_t needed = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_WAKE);
    uint64_t ioctls;

    b->shadow = mmap(NULL, b->len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b->shadow == MAP_FAILED) {
        b->shadow = NULL;
        error_setg_errno(errp, errno, "cannot map a %" PRIu64 "-byte "
                         "shadow of RAM block '%s'", b->len,
                         qemu_ram_get_idstr(b->rb));
        return false;
    }
    memcpy(b->shadow, b->host, b->len);
    b->placed = bitmap_new(b->len / HANDOFF_CHUNK_SIZE);
    qemu_madvise(b->host, b->len, QEMU_MADV_NOHUGEPAGE);
    if (uffd_register_memory(r->uffd, b->host, b->len,
                             UFFDIO_REGISTER_MODE_MISSING, &ioctls)) {
        error_setg_errno(errp, errno, "userfaultfd: cannot register RAM "
                         "block '%s'", qemu_ram_get_idstr(b->rb));
        return false;
    }
    b->registered = true;
    if ((ioctls & needed) != needed) {
        error_setg(errp, "userfaultfd: RAM block '%s' cannot be filled "
                   "page by page (UFFDIO_COPY)", qemu_ram_get_idstr(b->rb));
        return false;
    }
    if (ram_block_discard_range(b->rb, 0, b->len)) {
        error_setg(errp, "cannot empty RAM block '%s'",
                   qemu_ram_get_idstr(b->rb));
        return false;
    }
    return true;
}

/*
 * Undoes a half-armed start: blocks already shadowed get their bytes back.
 * No fault thread runs yet and the VM is paused: nothing touches them but
 * this memcpy, which must not fault into a registered range.
 */
static void disarm(HandoffRecorder *r)
{
    size_t i;

    for (i = 0; i < r->n_blocks; i++) {
        RecordBlock *b = &r->blocks[i];

        if (!b->placed) {
            break;
        }
        if (b->registered && uffd_unregister_memory(r->uffd, b->host,
                                                    b->len)) {
            record_fatal(b, "cannot unregister: %s", strerror(errno));
        }
        memcpy(b->host, b->shadow, b->len);
        qemu_madvise(b->host, b->len, QEMU_MADV_HUGEPAGE);
    }
}

/*
 * What must hold before RAM is moved aside: a paused, loaded VM whose RAM
 * no migration, snapshot, balloon, virtio-mem or pinning device (VFIO)
 * uses.
 */
static bool may_record(HandoffRecorder *r, Error **errp)
{
    if (!runstate_check(RUN_STATE_PAUSED) &&
        !runstate_check(RUN_STATE_PRELAUNCH)) {
        error_setg(errp, "the VM must be paused and loaded to start "
                   "recording (launch it with -S; record before 'cont')");
        return false;
    }
    if (ram_block_discard_is_disabled()) {
        error_setg(errp, "a device pins guest RAM (discards are disabled): "
                   "recording cannot move RAM aside");
        return false;
    }
    error_setg(&r->blocker, "a working-set recording is running "
               "(handoff-record-stop ends it)");
    if (migrate_add_blocker(r->blocker, errp) < 0) {
        error_free(r->blocker);
        r->blocker = NULL;
        return false;
    }
    /* Stops the balloon (virtio_balloon_inhibited); refused by virtio-mem. */
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "a device needs RAM discards (virtio-mem): "
                   "recording cannot hold them off");
        return false;
    }
    r->discards_disabled = true;
    return true;
}

/*
 * The log goes to PATH.part, renamed to PATH at stop: a new file, never
 * one that is there, since a link planted at it would have QEMU (root,
 * for userfaultfd) truncate and write where it points; and a refused or
 * failed recording leaves PATH as it was. Made last, once nothing else
 * can refuse.
 */
static bool open_log(HandoffRecorder *r, const char *path, Error **errp)
{
    r->path = g_strdup(path);
    r->part = g_strdup_printf("%s.part", path);
    r->part_fd = qemu_create(r->part, O_WRONLY | O_EXCL | O_NOFOLLOW, 0600,
                             errp);
    return r->part_fd >= 0;
}

void qmp_handoff_record_start(const char *path, Error **errp)
{
    MigrationState *ms = migrate_get_current();
    HandoffRecorder *r;
    size_t i;

    if (recorder) {
        error_setg(errp, "a recording is running: handoff-record-stop "
                   "first");
        return;
    }
    if (!ms->parameters.handoff_base || !*ms->parameters.handoff_base) {
        error_setg(errp, "no base: the VM's chunks are numbered in its "
                   "base's regions (-handoff base=DIR)");
        return;
    }
    r = g_new0(HandoffRecorder, 1);
    r->uffd = r->quit_fd = r->part_fd = -1;
    r->store = handoff_base_store_open(ms->parameters.handoff_base, errp);
    if (!r->store || !may_record(r, errp) ||
        !collect_blocks(r, r->store, errp) || !open_uffd(r, errp)) {
        recorder_free(r);
        return;
    }
    r->disk = handoff_record_disk_start(r->store, errp);
    if (!r->disk || !open_log(r, path, errp)) {
        recorder_free(r);
        return;
    }
    r->order = g_new(HandoffRecordEntry, r->capacity);
    for (i = 0; i < r->n_blocks; i++) {
        if (!arm_block(r, &r->blocks[i], errp)) {
            disarm(r);
            recorder_free(r);
            return;
        }
    }
    /* Code run before (a VM paused after running) must be fetched again. */
    if (tcg_enabled()) {
        tb_flush(first_cpu);
    }
    r->t0 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    trace_handoff_record_start(path, r->n_blocks, r->capacity);
    qemu_thread_create(&r->thread, "handoff-record", record_thread, r,
                       QEMU_THREAD_JOINABLE);
    recorder = r;
}

/*
 * One order from memory's and the disk's, each in time order: by time,
 * memory first on a tie.
 */
static GArray *merge_by_time(const HandoffRecordEntry *mem, uint64_t n_mem,
                             GArray *disk)
{
    GArray *all = g_array_sized_new(false, false, sizeof(HandoffRecordEntry),
                                    n_mem + disk->len);
    uint64_t i = 0, j = 0;

    while (i < n_mem || j < disk->len) {
        const HandoffRecordEntry *d = j < disk->len ?
            &g_array_index(disk, HandoffRecordEntry, j) : NULL;

        if (i < n_mem && (!d || mem[i].ns <= d->ns)) {
            g_array_append_val(all, mem[i]);
            i++;
        } else {
            g_array_append_val(all, *d);
            j++;
        }
    }
    return all;
}

HandoffRecordInfo *qmp_handoff_record_stop(Error **errp)
{
    HandoffRecorder *r = recorder;
    g_autoptr(GArray) disk = g_array_new(false, false,
                                         sizeof(HandoffRecordEntry));
    g_autoptr(GArray) all = NULL;
    HandoffRecordInfo *info;
    uint64_t one = 1;

    if (!r) {
        error_setg(errp, "no recording is running");
        return NULL;
    }
    recorder = NULL;
    if (write(r->quit_fd, &one, sizeof(one)) != sizeof(one)) {
        error_report("handoff: recording: cannot wake the fault thread: %s",
                     strerror(errno));
        _exit(EXIT_FAILURE);
    }
    /* The thread never takes the BQL: joining under it cannot deadlock. */
    qemu_thread_join(&r->thread);
    handoff_record_disk_stop(r->disk, r->t0, disk);
    r->disk = NULL;
    trace_handoff_record_stop(r->n_order, disk->len);
    all = merge_by_time(r->order, r->n_order, disk);
    info = g_new0(HandoffRecordInfo, 1);
    info->pages = r->n_order;
    info->disk_chunks = disk->len;
    if (!handoff_record_write(r->part_fd, r->store->base,
                              (HandoffRecordEntry *)all->data, all->len,
                              errp)) {
        goto failed;
    }
    if (rename(r->part, r->path)) {
        error_setg_errno(errp, errno, "cannot rename %s to %s", r->part,
                         r->path);
        goto failed;
    }
    close(r->part_fd);
    r->part_fd = -1;                /* kept: renamed */
    recorder_free(r);
    return info;

failed:
    qapi_free_HandoffRecordInfo(info);
    recorder_free(r);
    return NULL;
}
