/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The host end of the qemu-handoff guest agent: a virtio-serial port that
 * QEMU itself drives (-device handoff-agent), named for the agent
 * (guest-agent/include/handoff_agent_protocol.h). An outgoing handoff asks
 * it, after each round's dirty-log sync, which guest memory is free; the
 * guest answers with extents of guest-physical addresses.
 *
 * Everything the guest sends is untrusted. An extent is accepted only
 * where the guest could have written zeros itself: page-aligned, inside
 * writable RAM the guest sees at that address (RAM above 4 GiB sits at
 * another offset of its RAMBlock than its address: the memory map
 * decides, not arithmetic). Anything else is refused with a trace line
 * and changes nothing; a report that breaks the framing, or stops midway,
 * closes the port, which the agent sees as the host going away (it drops
 * what it was writing), and the next request reopens it. A report is only
 * ever taken for the generation asked last (handoff-save-rounds.c,
 * docs/guest-agent.md: the safety rule).
 *
 * The same port carries the answers to page-class requests (what each
 * page frame holds, for a breakdown: handoff-agent-classes.c); only their
 * framing is handled here, their bytes go to the sink the request named.
 */

#include "qemu/osdep.h"
#include "exec/memory.h"
#include "exec/address-spaces.h"
#include "exec/ram_addr.h"
#include "exec/ramblock.h"
#include "exec/target_page.h"
#include "hw/boards.h"
#include "hw/qdev-properties.h"
#include "hw/virtio/virtio-serial.h"
#include "qapi/error.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "sysemu/runstate.h"
#include "handoff-internal.h"
#include "handoff_agent_protocol.h"
#include "trace.h"

#define TYPE_HANDOFF_AGENT "handoff-agent"
OBJECT_DECLARE_SIMPLE_TYPE(HandoffAgent, HANDOFF_AGENT)

/* Where a report being received stands. */
typedef struct AgentReceiver {
    HandoffAgentReport header;
    size_t have;                /* bytes of the header, then of `extent` */
    bool in_extents;
    uint64_t extents_left;
    HandoffAgentExtent extent;
    bool wanted;                /* of the generation asked for */
    GArray *accepted;           /* HandoffFreeExtent */
    uint64_t accepted_bytes;    /* what they cover (overlaps counted twice) */
    bool overclaimed;           /* more than the guest has: not taken */
    bool in_classes;            /* in the bytes of a page-class map */
    uint64_t classes_left;
} AgentReceiver;

struct HandoffAgent {
    VirtIOSerialPort parent_obj;
    AgentReceiver rx;           /* main loop only */
    QEMUTimer *stall_timer;     /* runs while an answer is half received */
    int64_t closed_ns;          /* when the port was last reset */
    bool close_when_running;    /* a reset waits for a stopped VM to run */
    QEMUBH *close_bh;
    VMChangeStateEntry *vmstate_entry;
    Notifier wakeup;            /* from S3: no VM state change is notified */
};

/*
 * Shared with the migration thread: the generation a report is accepted
 * for (0: none) and the last accepted report.
 */
static struct {
    QemuMutex lock;
    HandoffAgent *agent;        /* the VM's one agent port, if any */
    uint64_t generation;
    GArray *report;
    uint64_t reports, refused;
    /*
     * The last request sent, and whether its answer is still due: the
     * agent answers requests one by one, and rounds can follow each other
     * faster than that, so a new request waits for the answer to the last
     * (or for it to be overdue) rather than queueing behind it.
     */
    uint64_t asked;
    int64_t asked_at;
    bool answer_due;
} agent_state;

/* After this, an unanswered request is taken as lost. */
#define AGENT_ANSWER_DUE_NS (1 * NANOSECONDS_PER_SECOND)

/*
 * An answer with no bytes for this long has stopped midway: the port is
 * reset then, rather than when the next request comes, so that request
 * can go out at once. Guest time (QEMU_CLOCK_VIRTUAL): a stopped guest
 * sends nothing and has not stalled.
 */
#define AGENT_STALL_MS 1000

/*
 * A reset port stays closed this long. The guest's writes block (they do
 * not fail) while the host end is closed, and a close followed at once by
 * an open reaches the guest as two control messages it may handle before
 * the agent runs: the agent would go on writing the old answer into the
 * new session, which would read it as a new answer with the wrong framing.
 * Closed for a while, the agent sees the host leave (poll gives EPOLLHUP)
 * and drops what it was writing.
 */
#define AGENT_REOPEN_NS (300 * SCALE_MS)

/* Who takes the answers to page-class requests (main loop). */
static const HandoffAgentClassesSink *classes_sink;

static void agent_state_init(void)
{
    static bool done;

    if (!done) {
        qemu_mutex_init(&agent_state.lock);
        done = true;
    }
}

static void count_refused(void)
{
    qemu_mutex_lock(&agent_state.lock);
    agent_state.refused++;
    qemu_mutex_unlock(&agent_state.lock);
}

static void refuse(const char *why, uint64_t gpa, uint64_t bytes)
{
    trace_handoff_agent_refused(why, gpa, bytes);
    count_refused();
}

/*
 * Splits [gpa, gpa + bytes) along the guest's memory map and keeps the
 * pieces that are writable RAM; the rest is refused. Called with the BQL.
 */
static void accept_extent(AgentReceiver *rx, uint64_t gpa, uint64_t bytes)
{
    uint64_t end;

    if (rx->overclaimed) {
        return;
    }
    if (!bytes || (gpa | bytes) & ~TARGET_PAGE_MASK ||
        uadd64_overflow(gpa, bytes, &end)) {
        refuse("not whole pages", gpa, bytes);
        return;
    }
    while (gpa < end) {
        MemoryRegionSection sec = memory_region_find(get_system_memory(),
                                                     gpa, end - gpa);
        uint64_t len = sec.mr ? int128_get64(sec.size) : 0;
        HandoffFreeExtent e;

        if (!sec.mr || sec.offset_within_address_space != gpa) {
            /* A hole: nothing at gpa up to the next section (or the end). */
            uint64_t hole = sec.mr ? sec.offset_within_address_space - gpa
                                   : end - gpa;

            refuse("not memory", gpa, hole);
            if (sec.mr) {
                memory_region_unref(sec.mr);
            }
            gpa += hole;
            continue;
        }
        if (!memory_region_is_ram(sec.mr) || memory_region_is_rom(sec.mr) ||
            sec.readonly || memory_region_is_ram_device(sec.mr) ||
            !sec.mr->ram_block) {
            refuse("not writable RAM", gpa, len);
        } else if (rx->accepted->len >= HANDOFF_AGENT_MAX_EXTENTS ||
                   rx->accepted_bytes + len > current_machine->maxram_size) {
            /*
             * A free list covers each page once and holds no more than
             * the guest's RAM: this one overlaps itself. Its pieces would
             * cost memory here and bitmap walks in the migration thread
             * in proportion to what it claims, so the whole report goes.
             */
            refuse("more than the guest's RAM", gpa, len);
            rx->overclaimed = true;
            memory_region_unref(sec.mr);
            return;
        } else {
            rx->accepted_bytes += len;
            e.rb = sec.mr->ram_block;
            /* A RAM region's block starts where the region does. */
            e.offset = sec.offset_within_region;
            e.bytes = len;
            g_array_append_val(rx->accepted, e);
        }
        memory_region_unref(sec.mr);
        gpa += len;
    }
}

static void publish(AgentReceiver *rx)
{
    GArray *old = NULL;
    guint extents = rx->accepted->len;
    bool taken = false;

    qemu_mutex_lock(&agent_state.lock);
    /*
     * Due until its last extent is in: a request sent between its header
     * and its extents would find it half received and drop it.
     */
    if (rx->header.generation == agent_state.asked) {
        agent_state.answer_due = false;
    }
    if (rx->wanted && !rx->overclaimed &&
        rx->header.generation == agent_state.generation) {
        old = agent_state.report;
        agent_state.report = rx->accepted;
        agent_state.reports++;
        rx->accepted = NULL;
        taken = true;
    }
    qemu_mutex_unlock(&agent_state.lock);
    if (old) {
        g_array_free(old, true);
    }
    trace_handoff_agent_report(rx->header.generation, extents, taken);
}

static void reset_receiver(AgentReceiver *rx)
{
    rx->have = 0;
    rx->in_extents = false;
    rx->extents_left = 0;
    rx->accepted_bytes = 0;
    rx->overclaimed = false;
    rx->in_classes = false;
    rx->classes_left = 0;
    if (rx->accepted) {
        g_array_set_size(rx->accepted, 0);
    } else {
        rx->accepted = g_array_new(false, false, sizeof(HandoffFreeExtent));
    }
}

/* The highest page frame of RAM the machine can have, above 4 GiB too. */
static uint64_t classes_max_pages(void)
{
    uint64_t bytes = current_machine->maxram_size + 4 * GiB;

    return MIN(bytes / qemu_target_page_size(), HANDOFF_AGENT_MAX_CLASS_PAGES);
}

/* A header arrived: false if it cannot be one of ours (framing is lost). */
static bool start_report(AgentReceiver *rx)
{
    HandoffAgentReport *h = &rx->header;
    uint64_t expected;
    bool late;

    h->magic = le32_to_cpu(h->magic);
    h->version = le32_to_cpu(h->version);
    h->generation = le64_to_cpu(h->generation);
    h->count = le64_to_cpu(h->count);
    if (h->magic == HANDOFF_AGENT_CLASSES_MAGIC &&
        h->version == HANDOFF_AGENT_VERSION &&
        h->count <= classes_max_pages()) {
        rx->wanted = classes_sink &&
                     classes_sink->expected(h->generation);
        if (!rx->wanted) {
            refuse("unasked page classes", h->generation, h->count);
        }
        rx->in_classes = true;
        rx->classes_left = h->count;
        rx->have = 0;
        return true;
    }
    if (h->magic != HANDOFF_AGENT_MAGIC || h->version != HANDOFF_AGENT_VERSION ||
        h->count > HANDOFF_AGENT_MAX_EXTENTS) {
        trace_handoff_agent_malformed(h->magic, h->version, h->count);
        count_refused();
        return false;
    }
    qemu_mutex_lock(&agent_state.lock);
    expected = agent_state.generation;
    late = h->generation && h->generation <= agent_state.asked;
    qemu_mutex_unlock(&agent_state.lock);
    /* A late answer (its round is over) is normal; others are not. */
    rx->wanted = expected && h->generation == expected;
    if (!rx->wanted && !late) {
        refuse("unasked generation", h->generation, expected);
    }
    rx->in_extents = true;
    rx->extents_left = h->count;
    rx->have = 0;
    return true;
}

/* Bytes of a page-class map, passed on if it was asked for. */
static void take_classes(AgentReceiver *rx, const uint8_t *buf, size_t len)
{
    if (rx->wanted && len) {
        classes_sink->data(rx->header.generation, buf, len);
    }
    rx->classes_left -= len;
    if (rx->classes_left) {
        return;
    }
    if (rx->wanted) {
        classes_sink->end(rx->header.generation, rx->header.count);
    }
    reset_receiver(rx);
}

/*
 * Bytes of a header or an extent record: how many were used, or -1 when
 * the framing is lost.
 */
static ssize_t take_record(AgentReceiver *rx, const uint8_t *buf, size_t len)
{
    uint8_t *dst = rx->in_extents ? (uint8_t *)&rx->extent
                                  : (uint8_t *)&rx->header;
    size_t want = (rx->in_extents ? sizeof(rx->extent)
                                  : sizeof(rx->header)) - rx->have;
    size_t n = MIN(want, len);

    memcpy(dst + rx->have, buf, n);
    rx->have += n;
    if (n < want) {
        return n;
    }
    if (!rx->in_extents) {
        if (!start_report(rx)) {
            return -1;
        }
        if (rx->in_classes) {
            take_classes(rx, NULL, 0);  /* a map of no pages is complete */
            return n;
        }
    } else {
        rx->have = 0;
        rx->extents_left--;
        if (rx->wanted) {
            accept_extent(rx, le64_to_cpu(rx->extent.gpa),
                          le64_to_cpu(rx->extent.bytes));
        }
    }
    if (rx->in_extents && !rx->extents_left) {
        publish(rx);
        reset_receiver(rx);
    }
    return n;
}

/* The receiver is inside an answer. */
static bool receiving(HandoffAgent *agent)
{
    return agent->rx.have || agent->rx.in_extents || agent->rx.in_classes;
}

static void close_port(HandoffAgent *agent)
{
    agent->close_when_running = false;
    virtio_serial_close(VIRTIO_SERIAL_PORT(agent));
    agent->closed_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

/*
 * Framing is lost: both ends start afresh (AGENT_REOPEN_NS). Closing the
 * port puts a control message into the guest's buffers, a write to guest
 * RAM: never while the VM is stopped, whose memory a handoff has sent or
 * an overlay saved after its final dirty-log sync (the source would no
 * longer be what the destination holds). Such a close waits until the VM
 * runs again; the receiver drops what it had at once.
 */
static void reset_port(HandoffAgent *agent)
{
    timer_del(agent->stall_timer);
    reset_receiver(&agent->rx);
    if (!runstate_is_running()) {
        agent->close_when_running = true;
        trace_handoff_agent_close_deferred();
        return;
    }
    close_port(agent);
}

static void agent_deferred_close(void *opaque)
{
    HandoffAgent *agent = opaque;

    if (agent->close_when_running && runstate_is_running()) {
        close_port(agent);
    }
}

/*
 * From a bottom half: vm_state_notify() calls this before the devices'
 * own handlers have restarted them.
 */
static void agent_vm_state_change(void *opaque, bool running, RunState state)
{
    HandoffAgent *agent = opaque;

    if (running && agent->close_when_running) {
        qemu_bh_schedule(agent->close_bh);
    }
}

/*
 * A wakeup from S3 makes the VM run again without notifying VM state
 * handlers; the guest clock of the stall timer ran while it slept.
 */
static void agent_wakeup(Notifier *notifier, void *data)
{
    HandoffAgent *agent = container_of(notifier, HandoffAgent, wakeup);

    if (agent->close_when_running) {
        qemu_bh_schedule(agent->close_bh);
    }
}

/*
 * An answer that stopped midway has lost its framing: what follows would
 * be read as its missing part.
 */
static void agent_stalled(void *opaque)
{
    HandoffAgent *agent = opaque;

    if (receiving(agent)) {
        trace_handoff_agent_malformed(agent->rx.header.magic,
                                      agent->rx.header.version,
                                      agent->rx.in_classes
                                          ? agent->rx.classes_left
                                          : agent->rx.extents_left);
        count_refused();
        reset_port(agent);
    }
}

static ssize_t agent_have_data(VirtIOSerialPort *port, const uint8_t *buf,
                               ssize_t len)
{
    HandoffAgent *agent = HANDOFF_AGENT(port);
    AgentReceiver *rx = &agent->rx;
    ssize_t used = 0;

    while (used < len) {
        ssize_t n;

        if (rx->in_classes) {
            n = MIN(rx->classes_left, (uint64_t)(len - used));
            take_classes(rx, buf + used, n);
        } else {
            n = take_record(rx, buf + used, len - used);
        }
        if (n < 0) {
            reset_port(agent);
            return len;
        }
        used += n;
    }
    if (receiving(agent)) {
        timer_mod(agent->stall_timer,
                  qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) + AGENT_STALL_MS);
    } else {
        timer_del(agent->stall_timer);
    }
    return len;
}

bool handoff_agent_present(void)
{
    return agent_state.agent != NULL;
}

/*
 * Whether a request can go out now, the port open: only to a running
 * guest (a request and a reopened port are writes into its RAM, and a
 * stopped guest cannot answer), not while a reset is still to be done,
 * and not until a reset port has been closed for AGENT_REOPEN_NS. An
 * answer still coming is left alone: the agent answers in turn and reads
 * the request after it.
 */
static bool port_ready(HandoffAgent *agent, int64_t now)
{
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(agent);

    if (!runstate_is_running()) {
        return false;
    }
    if (agent->close_when_running) {
        /*
         * A reset deferred while the VM was not running, its bottom half
         * not run yet (a fallback: the VM state handler and the wakeup
         * notifier schedule it).
         */
        close_port(agent);
        return false;
    }
    if (!port->host_connected) {
        if (now - agent->closed_ns < AGENT_REOPEN_NS) {
            return false;
        }
        reset_receiver(&agent->rx);
        virtio_serial_open(port);
    }
    return true;
}

/* False when no agent listens (or its buffers are full): no answer comes. */
static bool write_request(HandoffAgent *agent, uint32_t magic,
                          uint64_t generation)
{
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(agent);
    HandoffAgentRequest req = {
        .magic = cpu_to_le32(magic),
        .version = cpu_to_le32(HANDOFF_AGENT_VERSION),
        .generation = cpu_to_le64(generation),
    };

    return port->guest_connected &&
           virtio_serial_guest_ready(port) >= sizeof(req) &&
           virtio_serial_write(port, (uint8_t *)&req, sizeof(req)) ==
               sizeof(req);
}

bool handoff_agent_request(uint64_t generation)
{
    HandoffAgent *agent = agent_state.agent;
    VirtIOSerialPort *port = agent ? VIRTIO_SERIAL_PORT(agent) : NULL;
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    bool busy;

    if (!port) {
        return false;
    }
    /* No report of an earlier round applies from now on. */
    handoff_agent_forget();
    qemu_mutex_lock(&agent_state.lock);
    busy = agent_state.answer_due &&
           now - agent_state.asked_at < AGENT_ANSWER_DUE_NS;
    qemu_mutex_unlock(&agent_state.lock);
    if (busy || !port_ready(agent, now) ||
        !write_request(agent, HANDOFF_AGENT_MAGIC, generation)) {
        trace_handoff_agent_request(generation, false);
        return false;
    }
    qemu_mutex_lock(&agent_state.lock);
    agent_state.generation = agent_state.asked = generation;
    agent_state.asked_at = now;
    agent_state.answer_due = true;
    qemu_mutex_unlock(&agent_state.lock);
    trace_handoff_agent_request(generation, true);
    return true;
}

bool handoff_agent_request_classes(uint64_t generation,
                                   const HandoffAgentClassesSink *sink,
                                   Error **errp)
{
    HandoffAgent *agent = agent_state.agent;

    if (!agent) {
        error_setg(errp, "this VM has no guest agent port "
                   "(-device %s)", TYPE_HANDOFF_AGENT);
        return false;
    }
    if (!runstate_is_running()) {
        error_setg(errp, "the VM is not running: its guest agent cannot "
                   "answer (and a request would write into its memory)");
        return false;
    }
    if (!port_ready(agent, qemu_clock_get_ns(QEMU_CLOCK_REALTIME))) {
        error_setg(errp, "the guest agent's port is being reset (an answer "
                   "broke off or broke the protocol); retry");
        return false;
    }
    if (!write_request(agent, HANDOFF_AGENT_CLASSES_MAGIC, generation)) {
        error_setg(errp, "no guest agent listens on the port");
        return false;
    }
    classes_sink = sink;
    return true;
}

GArray *handoff_agent_take_report(uint64_t generation)
{
    GArray *report = NULL;

    qemu_mutex_lock(&agent_state.lock);
    if (agent_state.report && generation == agent_state.generation) {
        report = agent_state.report;
        agent_state.report = NULL;
    }
    qemu_mutex_unlock(&agent_state.lock);
    return report;
}

void handoff_agent_forget(void)
{
    GArray *old;

    agent_state_init();
    qemu_mutex_lock(&agent_state.lock);
    agent_state.generation = 0;
    old = agent_state.report;
    agent_state.report = NULL;
    qemu_mutex_unlock(&agent_state.lock);
    if (old) {
        g_array_free(old, true);
    }
}

void handoff_agent_counters(uint64_t *reports, uint64_t *refused)
{
    agent_state_init();
    qemu_mutex_lock(&agent_state.lock);
    *reports = agent_state.reports;
    *refused = agent_state.refused;
    qemu_mutex_unlock(&agent_state.lock);
}

static void agent_realize(DeviceState *dev, Error **errp)
{
    HandoffAgent *agent = HANDOFF_AGENT(dev);

    agent_state_init();
    if (agent_state.agent) {
        error_setg(errp, "a VM has at most one %s device", TYPE_HANDOFF_AGENT);
        return;
    }
    reset_receiver(&agent->rx);
    agent->stall_timer = timer_new_ms(QEMU_CLOCK_VIRTUAL, agent_stalled,
                                      agent);
    agent->close_bh = qemu_bh_new(agent_deferred_close, agent);
    agent->vmstate_entry =
        qemu_add_vm_change_state_handler(agent_vm_state_change, agent);
    agent->wakeup.notify = agent_wakeup;
    qemu_register_wakeup_notifier(&agent->wakeup);
    agent_state.agent = agent;
    virtio_serial_open(VIRTIO_SERIAL_PORT(dev));
}

static void agent_unrealize(DeviceState *dev)
{
    HandoffAgent *agent = HANDOFF_AGENT(dev);

    if (agent_state.agent == agent) {
        agent_state.agent = NULL;
    }
    timer_free(agent->stall_timer);
    agent->stall_timer = NULL;
    if (agent->vmstate_entry) {
        qemu_del_vm_change_state_handler(agent->vmstate_entry);
        agent->vmstate_entry = NULL;
    }
    if (agent->wakeup.notify) {
        notifier_remove(&agent->wakeup);
        agent->wakeup.notify = NULL;
    }
    qemu_bh_delete(agent->close_bh);
    agent->close_bh = NULL;
    g_array_free(agent->rx.accepted, true);
    agent->rx.accepted = NULL;
}

static void agent_instance_init(Object *obj)
{
    VirtIOSerialPort *port = VIRTIO_SERIAL_PORT(obj);

    /* The name the agent looks for; a "name" property overrides it. */
    port->name = g_strdup(HANDOFF_AGENT_PORT_NAME);
}

static void agent_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    VirtIOSerialPortClass *k = VIRTIO_SERIAL_PORT_CLASS(klass);

    k->realize = agent_realize;
    k->unrealize = agent_unrealize;
    k->have_data = agent_have_data;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    dc->desc = "qemu-handoff guest agent port (free memory reports, "
               "page classes)";
}

static const TypeInfo agent_info = {
    .name = TYPE_HANDOFF_AGENT,
    .parent = TYPE_VIRTIO_SERIAL_PORT,
    .instance_size = sizeof(HandoffAgent),
    .instance_init = agent_instance_init,
    .class_init = agent_class_init,
};

static void agent_register_types(void)
{
    type_register_static(&agent_info);
}

type_init(agent_register_types)
